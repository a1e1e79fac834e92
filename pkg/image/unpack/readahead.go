package unpack

import (
	"io"
	"sync"
)

// ReadAhead reads r in a goroutine of its own, a few blocks ahead of the
// consumer, so that producing the stream (network, decompression, hashing)
// runs on one core while the consumer (tar extraction) runs on another.
// Close stops the goroutine; it does not close r.
func ReadAhead(r io.Reader, blockSize, blocks int) io.ReadCloser {
	ra := &readAhead{full: make(chan []byte, blocks), free: make(chan []byte, blocks+1), stop: make(chan struct{})}
	for range blocks + 1 {
		ra.free <- make([]byte, blockSize)
	}
	ra.wg.Add(1)
	go ra.fill(r)
	return ra
}

type readAhead struct {
	full, free chan []byte
	stop       chan struct{}
	err        error // set before full is closed
	cur        []byte
	curBuf     []byte
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

func (ra *readAhead) fill(r io.Reader) {
	defer ra.wg.Done()
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			ra.err = io.EOF
			return
		}
		if err != nil {
			ra.err = err
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.curBuf != nil {
			ra.free <- ra.curBuf[:cap(ra.curBuf)]
			ra.curBuf = nil
		}
		buf, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.curBuf = buf, buf
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

func (ra *readAhead) Close() error {
	ra.closeOnce.Do(func() { close(ra.stop) })
	ra.wg.Wait()
	return nil
}
