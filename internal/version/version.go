// Package version holds the build's version, set by the Makefile with -ldflags.
package version

// Version is berth's version; "dev" outside a release build.
var Version = "dev"
