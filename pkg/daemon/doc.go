// Package daemon is berthd's engine: it owns the data root (one daemon per
// root, by lock), the image store and the registry client, and listens on
// the API sockets. Containers join it with the container lifecycle work
// (issue 4); today it serves images.
package daemon
