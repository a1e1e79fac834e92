package credentials_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-containers/berth/pkg/credentials"
)

// TestCredentialHelper: with "credsStore" in config.json, logins go to
// the docker-credential-<name> program, never into the file.
func TestCredentialHelper(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	store := filepath.Join(dir, "helper-store")
	os.MkdirAll(bin, 0o755)
	// A helper speaking the docker-credential-helpers protocol, keeping one
	// login in a file.
	helper := `#!/bin/sh
case "$1" in
store) cat > ` + store + ` ;;
get) read server; if [ -f ` + store + ` ]; then cat ` + store + `; else echo "credentials not found in native keychain"; exit 1; fi ;;
erase) rm -f ` + store + ` ;;
list) echo '{}' ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-berthtest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	cfg := filepath.Join(dir, "docker")
	os.MkdirAll(cfg, 0o700)
	os.WriteFile(filepath.Join(cfg, "config.json"), []byte(`{"credsStore": "berthtest"}`), 0o600)
	if err := credentials.SaveLogin(cfg, "127.0.0.1:5999", "bob", "hunter2"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg, "config.json")); strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "Ym9i") {
		t.Errorf("the password reached config.json: %s", b)
	}
	if b, _ := os.ReadFile(store); !strings.Contains(string(b), "hunter2") {
		t.Errorf("the helper did not get the login: %q", b)
	}
	auth, err := credentials.AuthenticatorFor(cfg, "127.0.0.1:5999")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := auth.Authorization()
	if err != nil || ac.Username != "bob" || ac.Password != "hunter2" {
		t.Errorf("login read back: %+v %v", ac, err)
	}
	if err := credentials.RemoveLogin(cfg, "127.0.0.1:5999"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("logout left the helper's store: %v", err)
	}
}
