package server

import (
	"context"
	"net/http"
	"os"
	goruntime "runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/api/types/system"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/gpu"
)

func (s *Server) ping(_ context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	h := w.Header()
	h.Set("Builder-Version", "1")
	h.Set("Ostype", "linux")
	h.Set("Docker-Experimental", "false")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, err := w.Write([]byte("OK"))
		return err
	}
	return nil
}

func kernelVersion() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func (s *Server) version(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	v := system.VersionResponse{
		Platform: system.PlatformInfo{Name: "berth"},
		Version:  s.daemonVersion, APIVersion: APIVersion, MinAPIVersion: MinAPIVersion,
		Os: "linux", Arch: goruntime.GOARCH, GoVersion: goruntime.Version(), KernelVersion: kernelVersion(),
		Components: []system.ComponentVersion{{Name: "Engine", Version: s.daemonVersion,
			Details: map[string]string{"ApiVersion": APIVersion, "MinAPIVersion": MinAPIVersion, "Os": "linux", "Arch": goruntime.GOARCH,
				"GoVersion": goruntime.Version(), "GitCommit": s.daemonVersion, "KernelVersion": kernelVersion(), "Experimental": "false"}}},
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) info(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	imgs, err := s.b.Images().List()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	info := system.Info{
		ID: "berth", Name: host, ServerVersion: s.daemonVersion, Images: len(imgs),
		Driver: s.b.StorageDriver(), DockerRootDir: s.b.Root(), OSType: "linux", OperatingSystem: osName(),
		Architecture: goruntime.GOARCH, NCPU: goruntime.NumCPU(), MemTotal: int64(si.Totalram) * int64(si.Unit),
		KernelVersion: kernelVersion(), CgroupDriver: "cgroupfs", LoggingDriver: "json-file",
		IndexServerAddress: "https://index.docker.io/v1/",
		CDISpecDirs:        s.b.CDISpecDirs(),
	}
	// GPUs first, by index (a CDI GPU once), then the other CDI devices.
	gpus, err := s.b.GPUs()
	if err != nil {
		return err
	}
	for _, g := range gpus {
		info.DiscoveredDevices = append(info.DiscoveredDevices, system.DeviceInfo{Source: g.Source, ID: g.ID})
	}
	for _, name := range s.b.CDIDevices() {
		if !slices.ContainsFunc(gpus, func(g gpu.GPU) bool { return g.ID == name }) {
			info.DiscoveredDevices = append(info.DiscoveredDevices, system.DeviceInfo{Source: gpu.SourceCDI, ID: name})
		}
	}
	ctrs, err := s.b.Containers()
	if err != nil {
		return err
	}
	for _, ctr := range ctrs {
		info.Containers++
		switch s.b.ContainerState(ctr).Status {
		case container.StateRunning:
			info.ContainersRunning++
		default:
			info.ContainersStopped++
		}
	}
	return writeJSON(w, http.StatusOK, info)
}

// osName is PRETTY_NAME from /etc/os-release.
func osName() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

// auth checks a login against its registry, as `docker login` asks.
func (s *Server) auth(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	var ac registry.AuthConfig
	if err := decodeJSON(r, w, &ac); err != nil {
		return err
	}
	server := ac.ServerAddress
	if server == "" {
		server = "https://index.docker.io/v1/"
	}
	if err := s.b.Registry().Login(ctx, server, authenticator(ac)); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, registry.AuthResponse{Status: "Login Succeeded"})
}

func authenticator(ac registry.AuthConfig) authn.Authenticator {
	if ac == (registry.AuthConfig{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken})
}

// registryAuth decodes the X-Registry-Auth header (base64url JSON, as the
// Docker CLI sends it). A missing or empty header is anonymous access.
func registryAuth(r *http.Request) (authn.Authenticator, error) {
	h := r.Header.Get("X-Registry-Auth")
	if h == "" {
		return authn.Anonymous, nil
	}
	ac, err := authconfig.Decode(h)
	if err != nil {
		return nil, errBadRequestf("X-Registry-Auth: %v", err)
	}
	return authenticator(*ac), nil
}
