package integration

import (
	"os"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}
