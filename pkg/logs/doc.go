// Package logs keeps container output in Docker's json-file format: one
// JSON object per line, {"log": "...\n", "stream": "stdout", "time": ...},
// rotated by size into NAME.1, NAME.2... The per-container shim writes it
// with Writer; the daemon reads it back for `logs` (tail, since, until,
// follow) with Read, also while it is being written.
package logs
