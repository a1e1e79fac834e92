package daemon

import (
	"regexp"
	"testing"
)

// TestGenerateNameNeverRunsOut: more containers than word pairs still get
// names, as the retries add numbers.
func TestGenerateNameNeverRunsOut(t *testing.T) {
	taken := map[string]bool{}
	valid := regexp.MustCompile(`^[a-z]+_[a-z]+[0-9]*$`)
	for i := 0; i < 3*len(adjectives)*len(surnames); i++ {
		for retry := 0; ; retry++ {
			if retry > 1000 {
				t.Fatalf("no free name after 1000 tries at container %d", i)
			}
			n := generateName(retry)
			if !valid.MatchString(n) {
				t.Fatalf("name %q", n)
			}
			if !taken[n] {
				taken[n] = true
				break
			}
		}
	}
}
