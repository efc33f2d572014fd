#ifndef CLIBFUZZER_SHIM_H
#define CLIBFUZZER_SHIM_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry point for programs with their own main (LLVM >= 11). Only linked in
/// builds with `-sanitize=fuzzer`; dtm-fuzz references it only when compiled with -DFUZZING.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
