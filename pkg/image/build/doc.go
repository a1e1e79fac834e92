// Package build turns a Dockerfile and its context into an image, as
// Docker's classic builder does: one step per instruction, each step's
// result an image of the store (marked as build cache), found again by a
// cache key on the next build.
//
// Dockerfiles are parsed with BuildKit's parser and instructions
// packages. A RUN executes, through a Runner the daemon provides, in a
// container on an overlay snapshot of the previous step; COPY and ADD
// write into such a snapshot directly; either way the snapshot's upper
// directory becomes the step's new layer (image.Store.Commit). Steps that
// only change the config (ENV, CMD, LABEL...) add no layer.
//
// The cache key of a step is the digest of its parent image's ID, the
// instruction, the build arguments in effect and, for COPY and ADD, a hash
// of every file they read (names, modes, link targets and contents; not
// times). The parent's ID covers both its layers and its config, so a
// changed file invalidates its COPY and every step after it, and nothing
// before.
package build
