// Package registry pulls images from and pushes them to OCI registries
// with go-containerregistry, and checks logins (package credentials keeps
// them).
//
// Plain HTTP is used only for registries on the loopback interface and for
// those the daemon's configuration names as insecure; every other request
// must be HTTPS, even where go-containerregistry would fall back.
package registry
