// Package credentials keeps registry logins as the Docker CLI does:
// config.json under DOCKER_CONFIG or ~/.docker (mode 0600), or the
// credential helper it names ("credsStore", "credHelpers"). The berth CLI
// and berthd's image command line share it; the daemon itself never reads
// it, it gets credentials with each request (X-Registry-Auth).
package credentials
