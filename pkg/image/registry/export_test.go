package registry

import "net/http"

// GuardedTransport exposes the client's transport to tests.
func GuardedTransport(c *Client) http.RoundTripper { return c.transport() }
