package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"unsafe"

	json "github.com/go-json-experiment/json/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Seccomp filters are compiled from the spec to BPF by libseccomp, as runc
// and crun do. Docker's default profile, as a spec section, comes from
// github.com/moby/profiles/seccomp (see DefaultSeccomp).

var seccompActions = map[specs.LinuxSeccompAction]libseccomp.ScmpAction{
	specs.ActKill:        libseccomp.ActKillThread,
	specs.ActKillThread:  libseccomp.ActKillThread,
	specs.ActKillProcess: libseccomp.ActKillProcess,
	specs.ActTrap:        libseccomp.ActTrap,
	specs.ActErrno:       libseccomp.ActErrno,
	specs.ActTrace:       libseccomp.ActTrace,
	specs.ActAllow:       libseccomp.ActAllow,
	specs.ActLog:         libseccomp.ActLog,
}

var seccompOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

// seccompArches maps the spec's SCMP_ARCH_* names to libseccomp's.
var seccompArches = map[specs.Arch]string{
	specs.ArchX86: "x86", specs.ArchX86_64: "amd64", specs.ArchX32: "x32",
	specs.ArchARM: "arm", specs.ArchAARCH64: "arm64", specs.ArchMIPS: "mips",
	specs.ArchMIPS64: "mips64", specs.ArchMIPS64N32: "mips64n32", specs.ArchMIPSEL: "mipsel",
	specs.ArchMIPSEL64: "mipsel64", specs.ArchMIPSEL64N32: "mipsel64n32", specs.ArchPPC: "ppc",
	specs.ArchPPC64: "ppc64", specs.ArchPPC64LE: "ppc64le", specs.ArchS390: "s390",
	specs.ArchS390X: "s390x", specs.ArchRISCV64: "riscv64", specs.ArchLOONGARCH64: "loong64",
}

func validateSeccomp(s *specs.LinuxSeccomp) error {
	if _, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet); err != nil {
		return fmt.Errorf("seccomp defaultAction: %w", err)
	}
	for _, a := range s.Architectures {
		if _, ok := seccompArches[a]; !ok {
			return fmt.Errorf("seccomp architecture %q: unknown", a)
		}
	}
	for _, sc := range s.Syscalls {
		if _, err := seccompAction(sc.Action, sc.ErrnoRet); err != nil {
			return fmt.Errorf("seccomp rule for %s: %w", strings.Join(sc.Names, ","), err)
		}
		for _, a := range sc.Args {
			if _, ok := seccompOps[a.Op]; !ok {
				return fmt.Errorf("seccomp rule for %s: operator %q: unknown", strings.Join(sc.Names, ","), a.Op)
			}
		}
	}
	return nil
}

func seccompAction(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	act, ok := seccompActions[a]
	if !ok {
		return 0, fmt.Errorf("action %q: not supported", a)
	}
	if act == libseccomp.ActErrno || act == libseccomp.ActTrace {
		ret := int16(unix.EPERM)
		if errnoRet != nil {
			ret = int16(*errnoRet)
		}
		act = act.SetReturnCode(ret)
	}
	return act, nil
}

// seccompCompilation names how compileSeccomp compiles (binary tree).
const seccompCompilation = "bintree\n"

// seccompProgram returns the BPF program for s, compiled once and cached
// under the runtime root by the hash of the spec section: libseccomp takes
// about 15 ms for Docker's profile, which would otherwise be paid at every
// start. The root is root-owned 0700, like the rest of the state.
func (r *Runtime) seccompProgram(s *specs.LinuxSeccomp) ([]byte, error) {
	key, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	// The version of the compilation is part of the key: programs cached
	// by an older berth are not reused.
	sum := sha256.Sum256(append([]byte(seccompCompilation), key...))
	p := filepath.Join(r.root, ".seccomp", hex.EncodeToString(sum[:])+".bpf")
	if prog, err := os.ReadFile(p); err == nil && len(prog) > 0 && len(prog)%sockFilterSize == 0 {
		return prog, nil
	}
	prog, err := compileSeccomp(s)
	if err != nil {
		return nil, fmt.Errorf("compile seccomp filter: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
		tmp := p + ".tmp" + strconv.Itoa(os.Getpid())
		if os.WriteFile(tmp, prog, 0o600) == nil {
			_ = os.Rename(tmp, p)
		}
	}
	return prog, nil
}

// sockFilterSize is sizeof(struct sock_filter).
const sockFilterSize = int(unsafe.Sizeof(unix.SockFilter{}))

// loadSeccompProgram installs a compiled filter on the calling thread (init
// execs from that thread, so the process inherits it).
func loadSeccompProgram(prog []byte) error {
	if len(prog) == 0 || len(prog)%sockFilterSize != 0 {
		return fmt.Errorf("seccomp program of %d bytes is not a BPF program", len(prog))
	}
	fprog := unix.SockFprog{Len: uint16(len(prog) / sockFilterSize), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	goruntime.KeepAlive(prog)
	if errno != 0 {
		return errno
	}
	return nil
}

// compileSeccomp compiles the spec's filter to BPF with libseccomp.
func compileSeccomp(s *specs.LinuxSeccomp) ([]byte, error) {
	def, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	// A binary tree by syscall number rather than libseccomp's default
	// chain of comparisons: the same rules, checked in O(log n). The
	// kernel runs the filter for every syscall number when it loads it (to
	// build its cache of always-allowed calls), so Docker's profile loads
	// in 0.45 ms instead of 1 ms on each start, and every syscall of the
	// container is checked faster. Needs libseccomp 2.5: older ones keep
	// the chain.
	_ = f.SetOptimize(2)
	for _, a := range s.Architectures {
		arch, err := libseccomp.GetArchFromString(seccompArches[a])
		if err != nil {
			return nil, fmt.Errorf("architecture %s: %w", a, err)
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("add architecture %s: %w", a, err)
		}
	}
	for _, sc := range s.Syscalls {
		if err := addSeccompRule(f, def, sc); err != nil {
			return nil, err
		}
	}
	return exportBPF(f)
}

// exportBPF returns the filter's program. libseccomp 2.5 (Debian 12) can
// only write it to an fd: use an anonymous memory file.
func exportBPF(f *libseccomp.ScmpFilter) ([]byte, error) {
	fd, err := unix.MemfdCreate("seccomp-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	file := os.NewFile(uintptr(fd), "seccomp-bpf")
	defer file.Close()
	if err := f.ExportBPF(file); err != nil {
		return nil, err
	}
	if _, err := file.Seek(0, 0); err != nil {
		return nil, err
	}
	return io.ReadAll(file)
}

func addSeccompRule(f *libseccomp.ScmpFilter, def libseccomp.ScmpAction, sc specs.LinuxSyscall) error {
	act, err := seccompAction(sc.Action, sc.ErrnoRet)
	if err != nil {
		return err
	}
	if act == def {
		return nil // libseccomp refuses rules that repeat the default
	}
	conds, err := seccompConditions(sc.Args)
	if err != nil {
		return err
	}
	for _, name := range sc.Names {
		call, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			continue // not a syscall of this architecture or libseccomp version
		}
		if err := addConditional(f, call, act, conds); err != nil {
			return fmt.Errorf("rule for %s: %w", name, err)
		}
	}
	return nil
}

// seccompConditions returns the rule's conditions as groups that each make
// one libseccomp rule: conditions on distinct arguments are ANDed in one
// rule; libseccomp cannot AND two conditions on the same argument, so, as
// runc does, those become separate rules (ORed).
func seccompConditions(args []specs.LinuxSeccompArg) ([][]libseccomp.ScmpCondition, error) {
	var all []libseccomp.ScmpCondition
	seen := map[uint]bool{}
	repeated := false
	for _, a := range args {
		c, err := libseccomp.MakeCondition(a.Index, seccompOps[a.Op], a.Value, a.ValueTwo)
		if a.Op != specs.OpMaskedEqual {
			c, err = libseccomp.MakeCondition(a.Index, seccompOps[a.Op], a.Value)
		}
		if err != nil {
			return nil, fmt.Errorf("condition on arg %d: %w", a.Index, err)
		}
		repeated = repeated || seen[a.Index]
		seen[a.Index] = true
		all = append(all, c)
	}
	if !repeated {
		return [][]libseccomp.ScmpCondition{all}, nil
	}
	groups := make([][]libseccomp.ScmpCondition, len(all))
	for i, c := range all {
		groups[i] = []libseccomp.ScmpCondition{c}
	}
	return groups, nil
}

func addConditional(f *libseccomp.ScmpFilter, call libseccomp.ScmpSyscall, act libseccomp.ScmpAction, groups [][]libseccomp.ScmpCondition) error {
	for _, g := range groups {
		var err error
		if len(g) == 0 {
			err = f.AddRule(call, act)
		} else {
			err = f.AddRuleConditional(call, act, g)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
