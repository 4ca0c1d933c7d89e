// host_shim.h: compile the CUDA kernels of scan.cu as ordinary C++ on the CPU, for tests without a GPU.
//
//     #include "host_shim.h"
//     #include "scan.cu"
//     HOST_SHIM_EXPORT(scan_channels_f32)    // -> extern "C" int host_scan_channels_f32(grid, block, params, codes)
//
// The CUDA keywords become nothing (__global__, __device__) or plain C++ (__forceinline__), and the
// built-in index variables (blockIdx, threadIdx, blockDim, gridDim) become globals. host_<kernel> then
// runs the kernel body once for every (block, thread) of a one-dimensional grid, one after another,
// setting blockIdx.x and threadIdx.x before each call. That is a faithful model of a launch only for
// kernels whose threads are independent (no shared memory, no __syncthreads, no warp intrinsics, no
// thread reading what another thread of the same launch writes); scan.cu is written that way, and
// host_shim_set_order() lets tests visit the threads in other orders to check it. Anything else about
// the GPU (concurrency, memory model, warp behaviour, FMA contraction, speed) is not modelled.
//
// Arguments arrive as cuLaunchKernel passes them: an array of pointers to the argument values. Unlike
// CuPy, which checks nothing, host_<kernel> also takes a string of type codes, one per argument
// ('f'/'d': pointer to float/double, 'F'/'D': pointer to scan.cu's complex of float/double, 'i': int,
// 'q': long long), and refuses a launch whose codes differ
// from the kernel's signature (returning -1), so a wrong argument count or a Python int where an
// np.int32 was meant fails the CPU tests instead of corrupting memory on a GPU.
#pragma once

#ifdef __CUDACC__
#error "host_shim.h compiles CUDA kernels as host C++; nvcc and NVRTC do not need it"
#endif

#include <cstddef>
#include <cstring>
#include <utility>

#define __global__
#define __device__
#define __forceinline__ inline
// __restrict__ is already a g++ extension.

struct HostShimDim3 {
    unsigned x, y, z;
};
static HostShimDim3 gridDim = {1, 1, 1}, blockDim = {1, 1, 1}, blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};

template <typename R> struct scan_complex;   // scan.cu's complex type, defined there

namespace host_shim {

// Type code of each kernel parameter type (const or not: CuPy passes both as a device pointer).
template <typename A> struct Code;
template <> struct Code<int> { static constexpr char value = 'i'; };
template <> struct Code<long long> { static constexpr char value = 'q'; };
template <> struct Code<float*> { static constexpr char value = 'f'; };
template <> struct Code<const float*> { static constexpr char value = 'f'; };
template <> struct Code<double*> { static constexpr char value = 'd'; };
template <> struct Code<const double*> { static constexpr char value = 'd'; };
template <> struct Code<scan_complex<float>*> { static constexpr char value = 'F'; };
template <> struct Code<const scan_complex<float>*> { static constexpr char value = 'F'; };
template <> struct Code<scan_complex<double>*> { static constexpr char value = 'D'; };
template <> struct Code<const scan_complex<double>*> { static constexpr char value = 'D'; };

template <typename... A>
const char* signature(void (*)(A...)) {
    static const char codes[] = {Code<A>::value..., '\0'};
    return codes;
}

// Order in which a launch visits its threads: 0 ascending, 1 descending, 2 a fixed permutation that
// jumps around the grid. Results must not depend on it (see the header comment).
static int order = 0;

template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(params[I])...);
}

template <typename... A>
int launch(void (*kernel)(A...), unsigned grid, unsigned block, void** params, const char* codes) {
    if (std::strcmp(codes, signature(kernel)) != 0) return -1;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    unsigned long long n = (unsigned long long)grid * block;
    const unsigned long long jump = 1000003ULL;    // a prime: k -> k * jump mod n is a permutation
    bool permute = order == 2 && n % jump != 0;
    for (unsigned long long k = 0; k < n; ++k) {
        unsigned long long i = order == 1 ? n - 1 - k : permute ? (k * jump) % n : k;
        blockIdx = {(unsigned)(i / block), 0, 0};
        threadIdx = {(unsigned)(i % block), 0, 0};
        call(kernel, params, std::index_sequence_for<A...>{});
    }
    return 0;
}

}  // namespace host_shim

extern "C" void host_shim_set_order(int order) { host_shim::order = order; }

#define HOST_SHIM_EXPORT(name)                                                                      \
    extern "C" int host_##name(unsigned grid, unsigned block, void** params, const char* codes) { \
        return host_shim::launch(name, grid, block, params, codes);                                 \
    }                                                                                               \
    extern "C" const char* host_signature_##name() { return host_shim::signature(name); }
