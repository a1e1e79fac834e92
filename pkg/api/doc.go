// Package api holds berthd's Docker Engine API: server/ routes requests to
// the daemon. The berth CLI talks to it with Docker's own Go client
// (github.com/moby/moby/client), so the wire types are Docker's on both
// sides.
package api
