// Package registry pulls images from and pushes them to OCI registries
// with go-containerregistry, and keeps registry credentials the way the
// Docker CLI does (config.json under DOCKER_CONFIG or ~/.docker, or a
// credential helper).
//
// Plain HTTP is used only for registries on the loopback interface and for
// those the daemon's configuration names as insecure; every other request
// must be HTTPS, even where go-containerregistry would fall back.
package registry
