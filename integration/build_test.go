package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
)

// writeContext makes a build context: files by slash path, "->" values
// are symlinks.
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var builtID = regexp.MustCompile(`Successfully built ([0-9a-f]{12})`)

// builtImage is the short ID a build's output names.
func builtImage(t *testing.T, out string) string {
	t.Helper()
	m := builtID.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no image built:\n%s", out)
	}
	return m[1]
}

const webDockerfile = `FROM busybox
WORKDIR /app
COPY . .
RUN echo "compiled from $(cat src/main.txt)" > /app/build.out && chmod +x serve.sh
EXPOSE 8080
CMD ["./serve.sh"]
`

// TestBuildWebApp: a Dockerfile shaped like a web app's is built, run,
// rebuilt from the cache, rebuilt after a change from its COPY on only,
// built again by the docker CLI's classic builder with the same cache,
// pushed to a registry and pulled back with the same digest.
func TestBuildWebApp(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ctx := writeContext(t, map[string]string{
		"Dockerfile":    webDockerfile,
		"serve.sh":      "#!/bin/sh\ncat /app/build.out\nls /app\n",
		"src/main.txt":  "v1",
		"secret.env":    "TOKEN=hunter2",
		"logs/old.log":  "old",
		".dockerignore": "secret.env\nlogs\n",
	})
	out := d.berthOK(t, "build", "-t", "alice/web", ctx)
	for _, want := range []string{"Step 1/6 : FROM busybox", "Step 4/6 : RUN echo", " ---> Running in ", "Successfully tagged alice/web:latest"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	id := builtImage(t, out)
	run := d.berthOK(t, "run", "--rm", "alice/web")
	if !strings.Contains(run, "compiled from v1") || strings.Contains(run, "secret.env") || strings.Contains(run, "logs") {
		t.Errorf("the image runs wrong (or holds what .dockerignore excludes):\n%s", run)
	}
	cfg := d.berthOK(t, "inspect", "--format", "{{.Config.WorkingDir}} {{.Config.Cmd}} {{.Config.ExposedPorts}}", "alice/web")
	if !strings.HasPrefix(cfg, "/app [./serve.sh] map[8080/tcp:") {
		t.Errorf("image config: %q", cfg)
	}

	out = d.berthOK(t, "build", "-t", "alice/web", ctx)
	if n := strings.Count(out, "Using cache"); n != 5 || builtImage(t, out) != id {
		t.Errorf("a rebuild used the cache %d times (want 5) and made %s (want %s):\n%s", n, builtImage(t, out), id, out)
	}
	// A file outside the context's .dockerignore'd part changes: FROM and
	// WORKDIR are cached, COPY and what follows are not.
	if err := os.WriteFile(filepath.Join(ctx, "src", "main.txt"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = d.berthOK(t, "build", "-t", "alice/web", ctx)
	if n := strings.Count(out, "Using cache"); n != 1 || !regexp.MustCompile(`WORKDIR /app\n ---> Using cache`).MatchString(out) {
		t.Errorf("after a change in the context, want only WORKDIR cached:\n%s", out)
	}
	if run := d.berthOK(t, "run", "--rm", "alice/web"); !strings.Contains(run, "compiled from v2") {
		t.Errorf("rebuilt image: %s", run)
	}
	// An ignored file changing changes nothing.
	if err := os.WriteFile(filepath.Join(ctx, "secret.env"), []byte("TOKEN=other"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = d.berthOK(t, "build", "-q", "-t", "alice/web", ctx)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(out) {
		t.Errorf("build -q printed %q", out)
	}
	id = strings.TrimPrefix(strings.TrimSpace(out), "sha256:")[:12]

	// The docker CLI's classic builder: the same Dockerfile, the same cache.
	dout, err := d.dockerBuild(t, "build", "-t", "bob/web", ctx)
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, dout)
	}
	if n := strings.Count(dout, "Using cache"); n != 5 || builtImage(t, dout) != id || !strings.Contains(dout, "Successfully tagged bob/web:latest") {
		t.Errorf("docker build (want 5 cache hits and image %s):\n%s", id, dout)
	}

	ref := reg.Addr + "/alice/web:1"
	d.berthOK(t, "tag", "alice/web", ref)
	push := d.berthOK(t, "push", ref)
	digest := regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(push)
	if digest == nil {
		t.Fatalf("push:\n%s", push)
	}
	d.berthOK(t, "rmi", ref, "alice/web", "bob/web")
	if out := d.berthOK(t, "images", "-q"); strings.Contains(out, id) {
		t.Fatalf("the built image is still there:\n%s", out)
	}
	if pull := d.berthOK(t, "pull", ref); !strings.Contains(pull, "Digest: "+digest[1]) {
		t.Errorf("pulled back with another digest (pushed %s):\n%s", digest[1], pull)
	}
	if got := d.berthOK(t, "images", "-q", ref); strings.TrimSpace(got) != id {
		t.Errorf("pulled image is %q, built %s", got, id)
	}
	if run := d.berthOK(t, "run", "--rm", ref); !strings.Contains(run, "compiled from v2") {
		t.Errorf("pulled image runs: %s", run)
	}
}

// dockerBuild runs the docker CLI's classic builder.
func (d *testDaemon) dockerBuild(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testutil.Require(t, "docker"), args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0", "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestBuildStagesAndInstructions: ARG before FROM, build args, stages
// with COPY --from and --target, -f, several -t, ONBUILD, and every
// instruction that sets the config, checked in the image.
func TestBuildStagesAndInstructions(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	bundle := filepath.Join(t.TempDir(), "bundle.tar.gz")
	writeTarGz(t, bundle, map[string]string{"lib/a.txt": "from the tar", "lib/b.txt": "b"})
	ctx := writeContext(t, map[string]string{
		"docker/build.Dockerfile": `ARG BASE=busybox
FROM ${BASE} AS build
ARG VERSION=0.0
ARG UNSET
ENV APP_VERSION=$VERSION
RUN mkdir /out && echo "version $VERSION unset=[$UNSET]" > /out/version
COPY --chown=1234:5678 --chmod=0750 tool.sh /out/
ADD bundle.tar.gz /opt/
ADD notes.txt /opt/notes/

FROM busybox AS final
LABEL org.example.team=infra
COPY --from=build /out/ /usr/local/share/app/
COPY --from=build /opt /opt
USER 1000:1000
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
SHELL ["/bin/sh", "-ec"]
ONBUILD LABEL triggered=yes
ENTRYPOINT ["cat"]
CMD ["/usr/local/share/app/version"]

FROM final AS unused
RUN exit 9
`,
		"tool.sh":   "#!/bin/sh\necho tool\n",
		"notes.txt": "notes",
	})
	copyFile(t, bundle, filepath.Join(ctx, "bundle.tar.gz"))
	out := d.berthOK(t, "build", "-f", filepath.Join(ctx, "docker", "build.Dockerfile"), "--target", "final",
		"--build-arg", "VERSION=1.2", "--build-arg", "NOBODY=1", "-t", "app:1", "-t", "app:latest", ctx)
	if !strings.Contains(out, "Successfully tagged app:1") || !strings.Contains(out, "Successfully tagged app:latest") ||
		!strings.Contains(out, "[Warning] One or more build-args [NOBODY] were not consumed") || strings.Contains(out, "exit 9") {
		t.Errorf("build output:\n%s", out)
	}
	if run := d.berthOK(t, "run", "--rm", "app:1"); strings.TrimSpace(run) != "version 1.2 unset=[]" {
		t.Errorf("final image's version file: %q", run)
	}
	ls := d.berthOK(t, "run", "--rm", "--user", "0", "--entrypoint", "sh", "app:1", "-c",
		"stat -c '%u:%g %a %n' /usr/local/share/app/tool.sh; cat /opt/lib/a.txt; echo; cat /opt/notes/notes.txt; echo; id -u")
	if want := "1234:5678 750 /usr/local/share/app/tool.sh\nfrom the tar\nnotes\n0\n"; ls != want {
		t.Errorf("copied files:\n%s\nwant:\n%s", ls, want)
	}
	format := "{{.Config.User}}|{{.Config.Volumes}}|{{.Config.StopSignal}}|{{.Config.Healthcheck.Test}}|{{.Config.Shell}}|{{.Config.OnBuild}}|{{.Config.Entrypoint}}|{{.Config.Labels}}|{{.Config.Env}}"
	got := strings.TrimSpace(d.dockerOK(t, "inspect", "--format", format, "app:1"))
	want := "1000:1000|map[/data:{}]|SIGINT|[CMD true]|[/bin/sh -ec]|[LABEL triggered=yes]|[cat]|map[org.example.team:infra]|[]"
	if got != want {
		t.Errorf("image config:\n got %s\nwant %s", got, want)
	}
	// A child of app:1 runs its ONBUILD trigger right after FROM.
	child := writeContext(t, map[string]string{"Dockerfile": "FROM app:1\nUSER 0\n"})
	out = d.berthOK(t, "build", "-t", "child", child)
	if !strings.Contains(out, "# Executing 1 build trigger") {
		t.Errorf("child build:\n%s", out)
	}
	if got := d.dockerOK(t, "inspect", "--format", "{{.Config.Labels.triggered}} {{.Config.OnBuild}}", "child"); strings.TrimSpace(got) != "yes []" {
		t.Errorf("the child's trigger label and triggers: %s", got)
	}
	// RUN steps get the build's limits and network.
	limited := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\n" +
		"RUN echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) links=$(ls /sys/class/net | wc -l)\n"})
	out = d.berthOK(t, "build", "--memory", "48m", "--network", "none", limited)
	if !strings.Contains(out, "mem=50331648 links=1") {
		t.Errorf("RUN with --memory 48m --network none:\n%s", out)
	}
	out = d.berthOK(t, "build", "--no-cache", limited)
	if !strings.Contains(out, "links=2") {
		t.Errorf("RUN on the default bridge should have lo and eth0:\n%s", out)
	}
}

func writeTarGz(t *testing.T, path string, files map[string]string) {
	t.Helper()
	dir := writeContext(t, files)
	if out, err := exec.Command("tar", "-C", dir, "-czf", path, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBuildFailures: bad Dockerfiles and contexts fail with an error that
// names the problem, tag nothing and leave no container, mount or cgroup
// (the daemon's cleanup checks); a failed RUN reports its output and exit
// code, and the steps before it stay cached.
func TestBuildFailures(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	outside := filepath.Join(t.TempDir(), "outside.txt")
	if err := os.WriteFile(outside, []byte("host secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dockerfile string
		files            map[string]string
		want             string
	}{
		{"syntax", "FROM busybox\nRUNN echo\n", nil, "dockerfile parse error on line 2: unknown instruction: RUNN"},
		{"no from", "RUN echo\n", nil, "dockerfile parse error on line 1: no build stage in current context"},
		{"parent dir", "FROM busybox\nCOPY ../outside.txt /\n", nil, "forbidden path outside the build context: ../outside.txt"},
		{"absolute symlink", "FROM busybox\nCOPY link /\n", map[string]string{"link": "->" + outside}, "link: a symbolic link on the way leads outside the build context"},
		{"relative symlink", "FROM busybox\nCOPY sub/link /\n", map[string]string{"sub/link": "->../../../../../../../" + outside}, "leads outside the build context"},
		{"missing file", "FROM busybox\nCOPY nothere /\n", nil, "file not found in build context"},
		{"no wildcard match", "FROM busybox\nCOPY *.none /x/\n", nil, "no source files were specified"},
		{"url", "FROM busybox\nADD https://example.com/a.tgz /\n", nil, "downloading from a URL is not supported"},
		{"platform", "FROM --platform=linux/s390x busybox\n", nil, "builds for its host's platform only"},
		{"missing base", "FROM 127.0.0.1:1/no/such:image\n", nil, "127.0.0.1:1"},
		{"missing stage", "FROM busybox\nCOPY --from=nostage /a /b\n", nil, "nostage"},
		{"several sources", "FROM busybox\nCOPY a b /dest\n", map[string]string{"a": "a", "b": "b"}, "the destination must be a directory and end with a /"},
	}
	for _, c := range cases {
		files := map[string]string{"Dockerfile": c.dockerfile}
		for k, v := range c.files {
			files[k] = v
		}
		out, err := d.berth(t, "", "build", "-t", "broken", writeContext(t, files))
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: err %v, want %q in:\n%s", c.name, err, c.want, out)
		}
	}
	// The docker CLI sends the name; the daemon looks for it in the context.
	if out, err := d.dockerBuild(t, "build", "-f", "Nope.Dockerfile", writeContext(t, nil)); err == nil || !strings.Contains(out, "Nope.Dockerfile") {
		t.Errorf("missing Dockerfile: %v\n%s", err, out)
	}
	// A RUN that fails: its output, Docker's message and its exit code.
	ctx := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo step one > /one\nRUN echo about to fail; exit 3\n"})
	out, err := d.berth(t, "", "build", "-t", "broken", ctx)
	if code := exitCode(t, err); code != 3 || !strings.Contains(out, "about to fail") ||
		!strings.Contains(out, "The command '/bin/sh -c echo about to fail; exit 3' returned a non-zero code: 3") {
		t.Errorf("failed RUN: exit %d:\n%s", code, out)
	}
	dout, err := d.dockerBuild(t, "build", "-t", "broken", ctx)
	if code := exitCode(t, err); code != 3 || !strings.Contains(dout, "returned a non-zero code: 3") || !strings.Contains(dout, "Using cache") {
		t.Errorf("docker build of a failing RUN: exit %d:\n%s", code, dout)
	}
	if out := d.berthOK(t, "images"); strings.Contains(out, "broken") {
		t.Errorf("a failed build tagged an image:\n%s", out)
	}
	for _, dir := range []string{"builds/runtime", "builds/bundles"} {
		entries, _ := os.ReadDir(filepath.Join(d.root, dir))
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") { // .seccomp: the runtime's cache
				t.Errorf("%s/%s left after failed builds", dir, e.Name())
			}
		}
	}
	if builds, _ := filepath.Glob(filepath.Join(d.root, "builds", "build-*")); len(builds) > 0 {
		t.Errorf("build dirs left: %v", builds)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM busybox\nRUN echo step one > /one\nRUN cat /one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = d.berthOK(t, "build", "-t", "fixed", ctx)
	if !regexp.MustCompile(`RUN echo step one > /one\n ---> Using cache`).MatchString(out) || !strings.Contains(out, "step one\n") {
		t.Errorf("after the fix, the step before should be cached:\n%s", out)
	}
}

// TestBuildCacheLifetime: the cache survives a daemon restart, and
// `builder prune` and `system prune` empty it.
func TestBuildCacheLifetime(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	ctx := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nCOPY a.txt /\nRUN cat /a.txt > /b.txt\nENV X=1\n", "a.txt": "a"})
	d.berthOK(t, "build", "-t", "cached", ctx)
	d.stop()
	d.start(t)
	if out := d.berthOK(t, "build", "-t", "cached", ctx); strings.Count(out, "Using cache") != 3 {
		t.Errorf("after a daemon restart:\n%s", out)
	}
	if out := d.berthOK(t, "images", "-a"); len(regexp.MustCompile(`<none>\s+<none>`).FindAllString(out, -1)) != 2 {
		t.Errorf("images -a should list the 2 unnamed step images:\n%s", out)
	}
	if out := d.dockerOK(t, "system", "df"); !regexp.MustCompile(`Build Cache\s+2\s`).MatchString(out) {
		t.Errorf("docker system df should count 2 build cache records:\n%s", out)
	}
	if out := d.berthOK(t, "builder", "prune", "-f"); !strings.Contains(out, "Deleted build cache objects:") {
		t.Errorf("builder prune:\n%s", out)
	}
	if out := d.berthOK(t, "build", "-t", "cached", ctx); strings.Contains(out, "Using cache") {
		t.Errorf("after builder prune:\n%s", out)
	}
	d.berthOK(t, "system", "prune", "-f")
	if out := d.berthOK(t, "build", "-t", "cached", ctx); strings.Contains(out, "Using cache") {
		t.Errorf("after system prune:\n%s", out)
	}
	if out := d.berthOK(t, "run", "--rm", "cached", "cat", "/b.txt"); out != "a" {
		t.Errorf("built image: %q", out)
	}
}

// TestBuildInterrupted: a client that goes away mid-RUN stops the build,
// and a daemon killed mid-RUN cleans up at its next start: no container,
// process, mount or cgroup is left (the daemon's cleanup checks the last
// two).
func TestBuildInterrupted(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	ctx := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nRUN sleep 60\n"})
	running := func() []string {
		var ids []string
		entries, _ := os.ReadDir(filepath.Join(d.root, "builds", "runtime"))
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				ids = append(ids, e.Name())
			}
		}
		return ids
	}
	startBuild := func() *exec.Cmd {
		cmd := exec.Command(testutil.Build(t, "./cmd/client", false), "build", ctx)
		cmd.Env = append(os.Environ(), "BERTH_HOST=unix://"+d.sock)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the RUN step's container runs", func() bool {
			ids := running()
			if len(ids) != 1 {
				return false
			}
			_, err := os.Stat(filepath.Join(d.root, "builds", "runtime", ids[0], "state.json"))
			return err == nil
		})
		return cmd
	}
	client := startBuild()
	_ = client.Process.Kill()
	_ = client.Wait()
	eventually(t, "the build stops with its client", func() bool { return len(running()) == 0 })

	client = startBuild()
	state, err := os.ReadFile(filepath.Join(d.root, "builds", "runtime", running()[0], "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	d.kill()
	_ = client.Wait()
	d.start(t)
	if ids := running(); len(ids) > 0 {
		t.Errorf("after a restart, build containers are left: %v", ids)
	}
	if builds, _ := filepath.Glob(filepath.Join(d.root, "builds", "build-*")); len(builds) > 0 {
		t.Errorf("after a restart, build dirs are left: %v", builds)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(state, &st); err != nil || st.Pid == 0 {
		t.Fatalf("state %s: %v", state, err)
	}
	// Killed, it may wait a moment to be reaped by whoever inherited it.
	eventually(t, "the RUN's process is gone", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.Pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// TestBuildFromScratch: FROM scratch, COPY --from an image (not a stage),
// the escape and syntax directives, an exec-form RUN, and --no-cache.
func TestBuildFromScratch(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	ctx := writeContext(t, map[string]string{
		"Dockerfile": "# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\n" +
			"COPY --from=busybox /bin/busybox /bin/\nCOPY hello.txt /\n" +
			"RUN [\"/bin/busybox\", \"sh\", \"-c\", `\n  \"/bin/busybox cat /hello.txt > /out.txt\"]\n" +
			"ENTRYPOINT [\"/bin/busybox\", \"cat\"]\nCMD [\"/out.txt\"]\n",
		"hello.txt": "hello from scratch",
	})
	out := d.berthOK(t, "build", "-t", "tiny", ctx)
	if !strings.Contains(out, "Step 1/6 : FROM scratch") {
		t.Errorf("build:\n%s", out)
	}
	if run := d.berthOK(t, "run", "--rm", "tiny"); run != "hello from scratch" {
		t.Errorf("run: %q", run)
	}
	if layers := d.dockerOK(t, "inspect", "--format", "{{len .RootFS.Layers}}", "tiny"); strings.TrimSpace(layers) != "3" {
		t.Errorf("layers: %s (want 3: two COPY and a RUN)", layers)
	}
	// The RUN was on the bridge with /etc files bound; none of their
	// mount points stayed in the image.
	if out, err := d.berth(t, "", "run", "--rm", "--network", "none", "tiny", "/etc/hosts"); err == nil || !strings.Contains(out, "No such file") {
		t.Errorf("the image has an /etc/hosts: %v %s", err, out)
	}
	out = d.berthOK(t, "build", "--no-cache", "-t", "tiny", ctx)
	if strings.Contains(out, "Using cache") {
		t.Errorf("--no-cache used the cache:\n%s", out)
	}
}
