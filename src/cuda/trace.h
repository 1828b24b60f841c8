/*
 * trace: a kernel timeline of the whole run from CUPTI's activity records
 * (HS_CUDA_TRACE=1), for the questions HS_CUDA_PROF cannot answer: the profiler times
 * each op between events in eager mode, which serialises programmatic dependent launches
 * and lets the host fall behind on short ops; this one records every kernel as the GPU
 * ran it, graph replays included, and reports per decode step (steps are cut at the
 * embedding kernel, the first of every step):
 *   - the step's span (embedding to the next step's embedding), the time some kernel was
 *     running (the union of kernel intervals), and the rest: gaps between kernels inside
 *     the step and the gap after its last kernel (the host's turn: sampling, scheduling);
 *   - per kernel (demangled name): calls and device time per step.
 * Only the steps with the most common (kernel count, token count) pair are summarised:
 * the pure decode steps of the most common batch size, so per-step times convert to bytes
 * a second (HS_TRACE_ANY_ROWS=1: the count alone, every pure decode step). libcupti is
 * loaded with dlopen when HS_CUDA_TRACE is set, so the binary needs nothing more
 * otherwise; without it the run goes on untraced (a warning says so).
 */
#ifndef HS_CUDA_TRACE_H
#define HS_CUDA_TRACE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Start recording kernels (call before the first launch to trace). 0, or -1 with a
 * warning on stderr when CUPTI is not available. */
int cuda_trace_start(void);
/* Flush CUPTI's buffers, stop, and print the summary to stderr (no-op if not started). */
void cuda_trace_report(void);

#ifdef __cplusplus
}
#endif

#endif
