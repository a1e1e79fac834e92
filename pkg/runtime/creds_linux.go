package runtime

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// capByName is built on first use: package init time is paid by every
// berthd start, the container init re-exec included.
var capByName = sync.OnceValue(func() map[string]capability.Cap {
	m := map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = c
	}
	return m
})

func capsFromNames(names []string) ([]capability.Cap, error) {
	out := make([]capability.Cap, 0, len(names))
	for _, n := range names {
		c, ok := capByName()[strings.ToUpper(n)]
		if !ok {
			return nil, fmt.Errorf("capability %q: unknown", n)
		}
		out = append(out, c)
	}
	return out, nil
}

// finalize runs after Start released init: it gives the process its
// identity and privileges, in the order the kernel allows.
func finalize(spec *specs.Spec, seccompProg []byte) error {
	p := spec.Process
	sc := seccompProg
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return stage("set no_new_privs", err)
		}
	}
	// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
	// while init still has it. With it, load it last, so the filter sees
	// as few of init's own syscalls as possible.
	if sc != nil && !p.NoNewPrivileges {
		if err := stage("load seccomp filter", loadSeccompProgram(sc)); err != nil {
			return err
		}
	}
	if err := setCredentials(p); err != nil {
		return err
	}
	if err := chdir(p); err != nil {
		return err
	}
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask)
	}
	unix.Umask(umask)
	if sc != nil && p.NoNewPrivileges {
		return stage("load seccomp filter", loadSeccompProgram(sc))
	}
	return nil
}

func chdir(p *specs.Process) error {
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return stage("chdir to cwd "+cwd, err)
	}
	return nil
}

func setCredentials(p *specs.Process) error {
	c, err := capability.NewPid2(0)
	if err != nil {
		return stage("capabilities", err)
	}
	if err := fillCaps(c, p.Capabilities); err != nil {
		return err
	}
	if err := c.Apply(capability.BOUNDING); err != nil {
		return stage("drop bounding capabilities", err)
	}
	// Keep the permitted set across setuid; effective is set again below.
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return stage("keep capabilities", err)
	}
	if err := setIDs(p.User); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return stage("clear keep capabilities", err)
	}
	if err := c.Apply(capability.CAPS); err != nil {
		return stage("set capabilities", err)
	}
	return stage("set ambient capabilities", c.Apply(capability.AMBIENT))
}

func fillCaps(c capability.Capabilities, caps *specs.LinuxCapabilities) error {
	c.Clear(capability.CAPS | capability.BOUNDING | capability.AMBIENT)
	if caps == nil {
		return nil
	}
	last, err := capability.LastCap()
	if err != nil {
		return err
	}
	sets := []struct {
		which capability.CapType
		names []string
	}{
		{capability.BOUNDING, caps.Bounding}, {capability.EFFECTIVE, caps.Effective},
		{capability.PERMITTED, caps.Permitted}, {capability.INHERITABLE, caps.Inheritable},
		{capability.AMBIENT, caps.Ambient},
	}
	for _, s := range sets {
		list, err := capsFromNames(s.names)
		if err != nil {
			return err
		}
		for _, cp := range list {
			if cp > last { // newer than this kernel: nothing to grant
				continue
			}
			// The kernel raises an ambient capability only when it is both
			// permitted and inheritable; like runc, skip the others rather
			// than fail (specs from `crun spec` list ambient caps alone).
			if s.which == capability.AMBIENT && !(c.Get(capability.PERMITTED, cp) && c.Get(capability.INHERITABLE, cp)) {
				continue
			}
			c.Set(s.which, cp)
		}
	}
	return nil
}

// setIDs sets the thread's group list, gid and uid with raw system calls.
// They change the calling thread only, which is enough: init execs from
// this thread, and the others, the Go runtime's, die at execve (the
// capability calls after these are per thread too). The libc (and Go)
// wrappers change every thread, each call signalling them all: a
// millisecond of the container's start.
func setIDs(u specs.User) error {
	gids := make([]uint32, len(u.AdditionalGids))
	copy(gids, u.AdditionalGids)
	var list unsafe.Pointer
	if len(gids) > 0 {
		list = unsafe.Pointer(&gids[0])
	}
	// Always set the group list, so host root's supplementary groups do not leak in.
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(list), 0); e != 0 {
		return stage("set additional groups", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return stage(fmt.Sprintf("set gid %d", u.GID), e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return stage(fmt.Sprintf("set uid %d", u.UID), e)
	}
	return nil
}
