import PivotCLI

// The whole CLI lives in PivotCLI, so tests can parse and validate every verb without a process.
await PivotCommand.start()
