package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/common"
)

// errBadRequest marks a malformed request.
var errBadRequest = errdefs.ErrInvalidArgument

func errBadRequestf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errBadRequest)...)
}

func errNotFound(msg string) error { return fmt.Errorf("%s: %w", msg, errdefs.ErrNotFound) }

// statusOf maps an error's category to the status Docker answers with.
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsAlreadyExists(err), errdefs.IsConflict(err):
		return http.StatusConflict
	case errdefs.IsUnauthorized(err):
		return http.StatusUnauthorized
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsNotImplemented(err):
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(err))
	_ = json.NewEncoder(w).Encode(common.ErrorResponse{Message: message(err)})
}

// categories are the errdefs sentinels that classify errors; their own
// words ("not found") add nothing to a message, so they are cut.
var categories = []error{errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists,
	errdefs.ErrConflict, errdefs.ErrUnauthenticated, errdefs.ErrPermissionDenied, errdefs.ErrNotImplemented}

func message(err error) string {
	msg := err.Error()
	for _, c := range categories {
		if errors.Is(err, c) {
			msg = strings.TrimPrefix(strings.ReplaceAll(msg, ": "+c.Error(), ""), c.Error()+": ")
			msg = strings.TrimPrefix(msg, c.Error()+"\n")
		}
	}
	return msg
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a JSON request body of at most maxJSONBody bytes.
func decodeJSON(r *http.Request, w http.ResponseWriter, v any) error {
	body := http.MaxBytesReader(w, r.Body, maxJSONBody)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errors.Join(errBadRequest, err)
	}
	return nil
}

// maxJSONBody bounds JSON request bodies (archives stream without bound).
const maxJSONBody = 1 << 20
