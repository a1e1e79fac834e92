// Package content is a content-addressed blob store: manifests, configs
// and compressed layers, each in blobs/sha256/<hex> under the store's root.
//
// A blob is written to tmp/ first, hashed while it is written, fsynced,
// checked against the digest and size the caller expects, and only then
// renamed into place (and its directory fsynced). A crash or kill -9 at any
// moment so leaves either no blob or the whole verified blob; what is left
// in tmp/ is removed by New.
package content
