package runtime

// LockedRun is lockedRun, for the test that calls it from the main thread.
var LockedRun = lockedRun
