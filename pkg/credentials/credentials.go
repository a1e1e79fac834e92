package credentials

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// dockerHubKey is the key the Docker CLI files Docker Hub's login under.
const dockerHubKey = "https://index.docker.io/v1/"

// ServerKey is the config.json key of a registry, as the Docker CLI
// writes it: Docker Hub's historical URL, else host[:port].
func ServerKey(server string) (string, error) {
	server = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://"), "/")
	if server == "" || server == "docker.io" || server == "index.docker.io" || server == "index.docker.io/v1" || server == "registry-1.docker.io" {
		return dockerHubKey, nil
	}
	reg, err := name.NewRegistry(server)
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", server, err)
	}
	return reg.RegistryStr(), nil
}

// ConfigDir is DOCKER_CONFIG, else ~/.docker, as for the Docker CLI.
func ConfigDir() string { return config.Dir() }

// SaveLogin stores a login in the config dir (config.json, mode 0600, or
// the credential helper it names) and never anywhere else.
func SaveLogin(dir, server, user, password string) error {
	key, cf, err := loadConfig(dir, server)
	if err != nil {
		return err
	}
	store := cf.GetCredentialsStore(key)
	if err := store.Store(types.AuthConfig{Username: user, Password: password, ServerAddress: key}); err != nil {
		return fmt.Errorf("store login for %s: %w", key, err)
	}
	return cf.Save()
}

// RemoveLogin forgets a login; forgetting an unknown one is no error.
func RemoveLogin(dir, server string) error {
	key, cf, err := loadConfig(dir, server)
	if err != nil {
		return err
	}
	if err := cf.GetCredentialsStore(key).Erase(key); err != nil {
		return fmt.Errorf("remove login for %s: %w", key, err)
	}
	return cf.Save()
}

// Authenticator returns the stored login for the registry of ref, or
// anonymous access when there is none.
func Authenticator(dir, ref string) (authn.Authenticator, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return AuthenticatorFor(dir, r.Context().RegistryStr())
}

// ForRegistry returns the stored login for a registry as Docker's wire
// type, empty when there is none.
func ForRegistry(dir, server string) (types.AuthConfig, error) {
	key, cf, err := loadConfig(dir, server)
	if err != nil {
		return types.AuthConfig{}, err
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return types.AuthConfig{}, fmt.Errorf("read login for %s: %w", key, err)
	}
	return ac, nil
}

// AuthenticatorFor returns the stored login for a registry.
func AuthenticatorFor(dir, server string) (authn.Authenticator, error) {
	key, cf, err := loadConfig(dir, server)
	if err != nil {
		return nil, err
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("read login for %s: %w", key, err)
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" && ac.Auth == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}), nil
}

// loadConfig reads the Docker config in dir and the key of server in it.
func loadConfig(dir, server string) (string, *configfile.ConfigFile, error) {
	key, err := ServerKey(server)
	if err != nil {
		return "", nil, err
	}
	cf, err := config.Load(dir)
	if err != nil {
		return "", nil, fmt.Errorf("load %s: %w", dir, err)
	}
	return key, cf, nil
}

// Header is the X-Registry-Auth value for the registry of image reference
// ref (base64url JSON, as the Docker CLI sends it); "" without a login.
func Header(dir, ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	ac, err := ForRegistry(dir, r.Context().RegistryStr())
	if err != nil || (ac == types.AuthConfig{}) {
		return "", err
	}
	return EncodeHeader(ac)
}

// EncodeHeader encodes a login as an X-Registry-Auth value.
func EncodeHeader(ac types.AuthConfig) (string, error) {
	return authconfig.Encode(registry.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		ServerAddress: ac.ServerAddress, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken})
}

// ReadPassword reads a password line (--password-stdin).
func ReadPassword(r io.Reader) (string, error) {
	pw, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	pw = strings.TrimRight(pw, "\r\n")
	if pw == "" {
		return "", errors.New("no password on standard input")
	}
	return pw, nil
}

// All returns every stored login, by registry, as X-Registry-Config
// carries them for a build's pulls.
func All(dir string) (map[string]registry.AuthConfig, error) {
	cf, err := config.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	all, err := cf.GetAllCredentials()
	if err != nil {
		return nil, fmt.Errorf("read logins: %w", err)
	}
	out := map[string]registry.AuthConfig{}
	for k, ac := range all {
		out[k] = registry.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
			ServerAddress: ac.ServerAddress, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}
	}
	return out, nil
}
