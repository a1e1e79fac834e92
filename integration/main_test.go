package integration

import (
	"os"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/runtime"
)

func TestMain(m *testing.M) {
	// Tests that use pkg/runtime in process re-execute this binary as init.
	if runtime.IsInit() {
		runtime.Init()
	}
	if os.Getenv(launchShimEnv) != "" {
		launchShimAndExit()
	}
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}
