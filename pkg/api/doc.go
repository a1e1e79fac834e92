// Package api will serve the Docker Engine API over berthd's socket and hold
// the client the berth CLI uses (issue 4). It is empty today.
package api
