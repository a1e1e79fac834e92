package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestParsePublishRange(t *testing.T) {
	for spec, want := range map[string]string{
		"80":                        "80/tcp->:",
		"8080:80/udp":               "80/udp->:8080",
		"127.0.0.1::80":             "80/tcp->127.0.0.1:",
		"8000-8001:80-81":           "80/tcp->:8000 81/tcp->:8001",
		"127.0.0.1:9000-9002:70-72": "70/tcp->127.0.0.1:9000 71/tcp->127.0.0.1:9001 72/tcp->127.0.0.1:9002",
		"53-54/udp":                 "53/udp->: 54/udp->:",
		"127.0.0.1::53-54/udp":      "53/udp->127.0.0.1: 54/udp->127.0.0.1:",
		"127.0.0.1:8000-8010:80":    "80/tcp->127.0.0.1:8000-8010",
	} {
		ports, bindings, err := parsePublishRange(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		var got []string
		for i, p := range ports {
			ip := ""
			if bindings[i].HostIP.IsValid() {
				ip = bindings[i].HostIP.String()
			}
			got = append(got, fmt.Sprintf("%s->%s:%s", p, ip, bindings[i].HostPort))
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: %s, want %s", spec, strings.Join(got, " "), want)
		}
	}
	for _, bad := range []string{"8000-8002:80-81", "8000:80-81", "82-80", "1:2:3:4"} {
		if _, _, err := parsePublishRange(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestParseGPUs(t *testing.T) {
	for spec, want := range map[string]string{
		"all":                                "count=-1 ids=[] caps=[[gpu]] driver=",
		"2":                                  "count=2 ids=[] caps=[[gpu]] driver=",
		"device=1":                           "count=0 ids=[1] caps=[[gpu]] driver=",
		`"device=0,GPU-abc"`:                 "count=0 ids=[0 GPU-abc] caps=[[gpu]] driver=",
		"count=1,capabilities=compute,video": "count=1 ids=[] caps=[[gpu compute video]] driver=",
		"capabilities=utility":               "count=-1 ids=[] caps=[[gpu utility]] driver=",
		"driver=nvidia,device=0,1":           "count=0 ids=[0 1] caps=[[gpu]] driver=nvidia",
	} {
		r, err := parseGPUs(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		got := fmt.Sprintf("count=%d ids=%v caps=%v driver=%s", r.Count, r.DeviceIDs, r.Capabilities, r.Driver)
		if got != want {
			t.Errorf("%s: %s, want %s", spec, got, want)
		}
	}
	for _, bad := range []string{"0", "two", "count=x", "2,device=1"} {
		if _, err := parseGPUs(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// TestRunConfigsAttach: as docker's, -i attaches stdin once (closed when
// the attached stdin ends); run -d attaches nothing and keeps an -i stdin
// open for later attaches.
func TestRunConfigsAttach(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		f                         createFlags
		attachIn, attachOut, once bool
	}{
		{"plain", createFlags{}, false, true, false},
		{"-i", createFlags{interactive: true}, true, true, true},
		{"-d -i", createFlags{interactive: true, detached: true}, false, false, false},
	} {
		cfg, _, err := tc.f.configs([]string{"busybox"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AttachStdin != tc.attachIn || cfg.AttachStdout != tc.attachOut || cfg.StdinOnce != tc.once || cfg.OpenStdin != tc.f.interactive {
			t.Errorf("%s: AttachStdin %v AttachStdout %v StdinOnce %v OpenStdin %v", tc.name, cfg.AttachStdin, cfg.AttachStdout, cfg.StdinOnce, cfg.OpenStdin)
		}
	}
}
