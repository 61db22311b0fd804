// Built into every executable of a -DMPQ_SANITIZE=ON build: AddressSanitizer
// reads these defaults before main (ASAN_OPTIONS still overrides them).
//
// intercept_tls_get_addr=0: with it on, LeakSanitizer's exit-time tracer
// dies with signal 11 in training processes that end by an error or a
// signal (seen with Debian 12's GCC 12 libasan and glibc 2.36). It crashes
// while reading a dynamic-TLS range it recorded from __tls_get_addr, which
// is garbage by then (e.g. 0x1dc83-0x280001ed85), in the dlopen'ed torch
// plugin's process. With the interception off, that range is never
// recorded. Leaks are still checked, and every training process is now
// leak-checked. A pointer kept only in a dlopen'ed library's thread_local
// would then be reported as a leak; none is.
extern "C" const char* __asan_default_options() { return "intercept_tls_get_addr=0"; }
