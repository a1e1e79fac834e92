package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/snapshot"
)

// Runner runs the process of a RUN step in a container.
type Runner interface {
	// Run runs step.Args in a container on step.Rootfs, its output going
	// to step.Output, and returns the process's exit code. The container
	// is gone when Run returns, and killed when ctx ends.
	Run(ctx context.Context, step RunStep) (int, error)
}

// RunStep is one RUN instruction's process.
type RunStep struct {
	ID      string // the container's ID: unique, 64 hex digits
	Rootfs  string // mounted root filesystem
	Args    []string
	Env     []string
	Cwd     string
	User    string // as in the image config; resolved in Rootfs
	Network string // "" (the build network), "none" or "host"
	Limits  Limits
	Output  io.Writer
}

// Limits are the cgroup limits of a build's RUN steps (docker build's
// --memory, --cpu-shares...); zero values set none.
type Limits struct {
	Memory, MemorySwap             int64
	CPUShares, CPUQuota, CPUPeriod int64
	CpusetCpus, CpusetMems         string
	ShmSize                        int64
}

// Options are a build's parameters, as POST /build names them.
type Options struct {
	Dockerfile string // path inside the context; default "Dockerfile"
	Tags       []string
	BuildArgs  map[string]*string
	Labels     map[string]string
	Target     string
	NoCache    bool
	Network    string
	Limits     Limits
}

// Builder builds images into Store.
type Builder struct {
	Store    *image.Store
	Snapshot snapshot.Driver
	Runner   Runner
	// Pull fetches an image that FROM or COPY --from names and that is not
	// stored; nil means such an image is an error.
	Pull func(ctx context.Context, ref string) (*image.Image, error)
	// TmpDir holds the context and the steps' snapshots while building.
	TmpDir string
}

// RunError is a RUN step whose process failed.
type RunError struct {
	Args []string
	Code int
}

func (e *RunError) Error() string {
	return fmt.Sprintf("The command '%s' returned a non-zero code: %d", strings.Join(e.Args, " "), e.Code)
}

// predefinedArgs may be passed with --build-arg without an ARG, as in
// Docker; they reach RUN but not the image.
var predefinedArgs = []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}

// Build builds the Dockerfile of the context tar stream ctxTar, writing
// Docker's classic builder output to out, and tags the result. A failed
// build tags nothing and leaves no container or mount; the steps that
// succeeded stay in the cache.
func (b *Builder) Build(ctx context.Context, ctxTar io.Reader, opts Options, out io.Writer) (*image.Image, error) {
	tags := make([]string, len(opts.Tags))
	for i, t := range opts.Tags {
		n, err := image.NormalizeName(t)
		if err != nil {
			return nil, fmt.Errorf("invalid tag %q: %w", t, err)
		}
		tags[i] = n
	}
	if err := os.MkdirAll(b.TmpDir, 0o700); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(b.TmpDir, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	bc, err := openContext(ctxTar, filepath.Join(work, "context"))
	if err != nil {
		return nil, err
	}
	defer bc.Close()
	name := opts.Dockerfile
	if name == "" {
		name = "Dockerfile"
	}
	df, err := bc.root.ReadFile(filepath.Clean(strings.TrimPrefix(name, "/")))
	if err != nil {
		//lint:ignore ST1005 Docker's words, which clients match
		return nil, invalid(fmt.Errorf("Cannot locate specified Dockerfile: %s", name))
	}
	if err := bc.applyIgnore(); err != nil {
		return nil, err
	}
	parsed, err := parser.Parse(bytes.NewReader(df))
	if err != nil {
		return nil, invalid(fmt.Errorf("dockerfile parse error: %w", err))
	}
	stages, metaArgs, err := instructions.Parse(parsed.AST, nil)
	if err != nil {
		var le *parser.LocationError
		if !strings.Contains(err.Error(), "on line") && errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
			err = fmt.Errorf("dockerfile parse error on line %d: %w", le.Locations[0][0].Start.Line, err)
		}
		return nil, invalid(err)
	}
	if len(stages) == 0 {
		return nil, invalid(errors.New("the Dockerfile has no FROM instruction"))
	}
	if opts.Target != "" {
		i, ok := instructions.HasStage(stages, opts.Target)
		if !ok {
			return nil, invalid(fmt.Errorf("failed to reach build target %s in Dockerfile", opts.Target))
		}
		stages = stages[:i+1]
	}
	last := &stages[len(stages)-1]
	for _, k := range slices.Sorted(maps.Keys(opts.Labels)) {
		last.AddCommand(instructions.NewLabelCommand(k, opts.Labels[k], true))
	}
	bs := &buildState{b: b, ctx: ctx, opts: opts, out: out, bc: bc, work: work,
		lex: shell.NewLex(parsed.EscapeToken), meta: map[string]string{}, used: map[string]bool{}}
	bs.total = len(metaArgs) + len(stages)
	for _, s := range stages {
		bs.total += len(s.Commands)
	}
	for i := range metaArgs {
		bs.printStep(metaArgs[i].String())
		if err := bs.metaArg(&metaArgs[i]); err != nil {
			return nil, bs.located(err, &metaArgs[i])
		}
	}
	for i := range stages {
		s := &stages[i]
		bs.printStep(s.SourceCode)
		st, err := bs.from(s)
		if err != nil {
			return nil, fmt.Errorf("dockerfile line %d: %w", s.Location[0].Start.Line, err)
		}
		for _, cmd := range s.Commands {
			bs.printStep(cmdString(cmd))
			if err := bs.dispatch(st, cmd); err != nil {
				return nil, bs.located(err, cmd)
			}
		}
		bs.stages = append(bs.stages, st)
	}
	final := bs.stages[len(bs.stages)-1]
	if final.img == nil {
		//lint:ignore ST1005 Docker's words, which clients match
		return nil, invalid(errors.New("No image was generated. Is your Dockerfile empty?"))
	}
	var unused []string
	for k := range opts.BuildArgs {
		if !bs.used[k] && !slices.Contains(predefinedArgs, k) {
			unused = append(unused, k)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		fmt.Fprintf(out, "[Warning] One or more build-args %v were not consumed\n", unused)
	}
	fmt.Fprintf(out, "Successfully built %s\n", final.img.ID.Encoded()[:12])
	for _, t := range tags {
		if err := b.Store.Tag(final.img.ID.String(), t); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "Successfully tagged %s\n", image.FamiliarName(t))
	}
	return b.Store.Get(final.img.ID.String())
}

// buildState is one build in progress.
type buildState struct {
	b      *Builder
	ctx    context.Context
	opts   Options
	out    io.Writer
	bc     *buildContext
	work   string
	lex    *shell.Lex
	meta   map[string]string // ARGs before the first FROM
	used   map[string]bool   // build args an ARG declared
	stages []*stage
	total  int
	step   int
}

// stage is the state of one stage: its last image and config.
type stage struct {
	name   string
	img    *image.Image // nil while a FROM scratch stage has no step yet
	cfg    *v1.ConfigFile
	args   []string // ARGs in effect, "KEY=value", in declaration order
	cmdSet bool     // a CMD in this stage (ENTRYPOINT then keeps it)
}

func (bs *buildState) printStep(code string) {
	bs.step++
	fmt.Fprintf(bs.out, "Step %d/%d : %s\n", bs.step, bs.total, code)
}

// located prefixes err with the instruction's line.
func (bs *buildState) located(err error, cmd instructions.Command) error {
	var re *RunError
	if errors.As(err, &re) {
		return err // Docker's words, as they are
	}
	if loc := cmd.Location(); len(loc) > 0 {
		return fmt.Errorf("dockerfile line %d: %s: %w", loc[0].Start.Line, strings.ToUpper(cmd.Name()), err)
	}
	return err
}

func cmdString(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return strings.ToUpper(cmd.Name())
}

func (bs *buildState) metaArg(a *instructions.ArgCommand) error {
	for _, kv := range a.Args {
		v := ""
		if kv.Value != nil {
			ex, _, err := bs.lex.ProcessWord(*kv.Value, envGetter(bs.metaEnv()))
			if err != nil {
				return err
			}
			v = ex
		}
		if bv, ok := bs.opts.BuildArgs[kv.Key]; ok && bv != nil {
			v = *bv
			bs.used[kv.Key] = true
		}
		bs.meta[kv.Key] = v
	}
	return nil
}

func (bs *buildState) metaEnv() []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(bs.meta)) {
		env = append(env, k+"="+bs.meta[k])
	}
	return env
}

// from starts a stage: from scratch, an earlier stage or an image.
func (bs *buildState) from(s *instructions.Stage) (*stage, error) {
	base, _, err := bs.lex.ProcessWord(s.BaseName, envGetter(bs.metaEnv()))
	if err != nil {
		return nil, err
	}
	if s.Platform != "" {
		p, _, err := bs.lex.ProcessWord(s.Platform, envGetter(bs.metaEnv()))
		if err != nil {
			return nil, err
		}
		host := "linux/" + goruntime.GOARCH
		if p != host && p != "linux" {
			return nil, invalid(fmt.Errorf("FROM --platform=%s: this builder builds for its host's platform only (%s)", p, host))
		}
	}
	st := &stage{name: strings.ToLower(s.Name)}
	prev := bs.stageNamed(base)
	switch {
	case base == "scratch":
		st.cfg = &v1.ConfigFile{OS: "linux", Architecture: goruntime.GOARCH}
	case prev != nil:
		st.img, st.cfg = prev.img, prev.cfg.DeepCopy()
		if st.img == nil {
			return nil, invalid(fmt.Errorf("stage %s made no image", base))
		}
	default:
		img, err := bs.image(base)
		if err != nil {
			return nil, err
		}
		cfg, err := bs.b.Store.Config(img)
		if err != nil {
			return nil, err
		}
		st.img, st.cfg = img, cfg.DeepCopy()
	}
	if st.img != nil {
		fmt.Fprintf(bs.out, " ---> %s\n", st.img.ID.Encoded()[:12])
	}
	return st, bs.onBuild(st)
}

// stageNamed is the earlier stage called name (or numbered name).
func (bs *buildState) stageNamed(name string) *stage {
	for i, st := range bs.stages {
		if st.name != "" && st.name == strings.ToLower(name) || fmt.Sprint(i) == name {
			return st
		}
	}
	return nil
}

// image is a stored image by reference, pulled if missing and possible.
func (bs *buildState) image(ref string) (*image.Image, error) {
	img, err := bs.b.Store.Get(ref)
	if err == nil || !errdefs.IsNotFound(err) || bs.b.Pull == nil {
		return img, err
	}
	return bs.b.Pull(bs.ctx, ref)
}

// onBuild runs the ONBUILD triggers of a stage's base image, as Docker
// does right after FROM, and clears them from the stage's config.
func (bs *buildState) onBuild(st *stage) error {
	triggers := st.cfg.Config.OnBuild
	if len(triggers) == 0 {
		return nil
	}
	st.cfg.Config.OnBuild = nil
	fmt.Fprintf(bs.out, "# Executing %d build trigger", len(triggers))
	if len(triggers) > 1 {
		fmt.Fprint(bs.out, "s")
	}
	fmt.Fprintln(bs.out)
	for _, t := range triggers {
		res, err := parser.Parse(strings.NewReader(t))
		if err != nil {
			return fmt.Errorf("ONBUILD %s: %w", t, err)
		}
		for _, n := range res.AST.Children {
			cmd, err := instructions.ParseCommand(n)
			if err != nil {
				return fmt.Errorf("ONBUILD %s: %w", t, err)
			}
			if err := bs.dispatch(st, cmd); err != nil {
				return fmt.Errorf("ONBUILD %s: %w", t, err)
			}
		}
	}
	return nil
}

// env is what expansion and RUN see: the config's Env, then the ARGs not
// shadowed by it.
func (st *stage) env() []string {
	env := slices.Clone(st.cfg.Config.Env)
	for _, a := range st.args {
		k, _, _ := strings.Cut(a, "=")
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") }) {
			env = append(env, a)
		}
	}
	return env
}

// cacheKey is the digest of what a step's result depends on.
func (bs *buildState) cacheKey(st *stage, cmd instructions.Command, extra ...string) digest.Digest {
	h := sha256.New()
	parent := "scratch"
	if st.img != nil {
		parent = st.img.ID.String()
	}
	fmt.Fprintf(h, "parent %s\n", parent)
	if st.img == nil {
		fmt.Fprintf(h, "config %s %s\n", st.cfg.OS, st.cfg.Architecture)
	}
	fmt.Fprintf(h, "instruction %q\n", cmdString(cmd))
	for _, a := range st.args {
		fmt.Fprintf(h, "arg %q\n", a)
	}
	for _, e := range extra {
		fmt.Fprintf(h, "extra %q\n", e)
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))
}

// commit makes a step's image: the stage's config as the step changed it
// (cfg), and the layer that change writes into a snapshot of the stage
// (none when change is nil or writes nothing). A cached result of the
// same key is used instead, unless the build says no cache.
func (bs *buildState) commit(st *stage, key digest.Digest, cfg *v1.ConfigFile, createdBy string, change func(rootfs string) error) error {
	if !bs.opts.NoCache {
		if img, ok := bs.b.Store.CacheGet(key); ok {
			c, err := bs.b.Store.Config(img)
			if err == nil {
				fmt.Fprintf(bs.out, " ---> Using cache\n ---> %s\n", img.ID.Encoded()[:12])
				st.img, st.cfg = img, c.DeepCopy()
				return nil
			}
		}
	}
	upper := ""
	if change != nil {
		if bs.b.Snapshot.Name() != "overlay" {
			return errors.New("building needs overlayfs, which this kernel lacks")
		}
		dir, err := os.MkdirTemp(bs.work, "step-")
		if err != nil {
			return err
		}
		defer snapshot.Remove(bs.b.Snapshot, dir) // on error paths; the build dir goes too
		var layers []string
		if st.img != nil {
			layers = bs.b.Store.LayerDirs(st.img)
		}
		rootfs, err := bs.b.Snapshot.Mount(layers, dir)
		if err != nil {
			return err
		}
		if err := change(rootfs); err != nil {
			return err
		}
		if err := bs.b.Snapshot.Unmount(dir); err != nil {
			return err
		}
		if upper = filepath.Join(dir, "upper"); isEmptyDir(upper) {
			upper = ""
		}
	}
	now := time.Now().UTC()
	cfg.Created = v1.Time{Time: now}
	cfg.History = append(cfg.History, v1.History{Created: v1.Time{Time: now}, CreatedBy: createdBy, EmptyLayer: upper == ""})
	img, err := bs.b.Store.Commit(bs.ctx, st.img, cfg, upper, image.PutOptions{BuildCache: true})
	if err != nil {
		return err
	}
	if err := bs.b.Store.CachePut(key, img.ID); err != nil {
		return err
	}
	st.img, st.cfg = img, cfg
	fmt.Fprintf(bs.out, " ---> %s\n", img.ID.Encoded()[:12])
	return nil
}

func isEmptyDir(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return true
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

func invalid(err error) error { return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err) }

// envGetter serves "KEY=value" pairs to the shell lexer.
type envGetter []string

func (e envGetter) Get(key string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		if k, v, _ := strings.Cut(e[i], "="); k == key {
			return v, true
		}
	}
	return "", false
}

func (e envGetter) Keys() []string {
	keys := make([]string, 0, len(e))
	for _, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return keys
}
