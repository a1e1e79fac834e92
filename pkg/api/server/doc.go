// Package server serves a versioned subset of the Docker Engine API.
//
// routes.go is the only file that knows gorilla/mux: every route is served
// with and without a /v{version} prefix. Handlers return errors; errors.go
// turns their errdefs categories into Docker's status codes and
// {"message": ...} bodies, in one place.
package server
