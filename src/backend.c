/* backend: what exists in every build. The CUDA constructor lives in src/cuda/ when
 * the CUDA backend is built (HYSERVE_HAVE_CUDA); otherwise asking for it is a clear
 * error, not a crash. */
#include "backend.h"

#ifndef HYSERVE_HAVE_CUDA
backend_t *backend_cuda_create(int device, char *err, size_t n) {
    (void)device;
    hs_errf(err, n, HS_ERR_UNSUPPORTED,
            "this hyserve was built without the CUDA backend (no nvcc at configure time); use --device cpu");
    return NULL;
}
#endif
