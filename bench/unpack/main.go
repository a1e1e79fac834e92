// Command unpack extracts one layer with berth's unpacker, for
// bench/image.sh to compare with `tar -xzf` on the same layer.
package main

import (
	"fmt"
	"os"

	"github.com/berth-containers/berth/pkg/image/unpack"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: unpack LAYER DIR")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.MkdirAll(os.Args[2], 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := unpack.Unpack(f, os.Args[2], unpack.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
