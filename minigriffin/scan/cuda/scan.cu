// Linear scan h_t = a_t * h_{t-1} + x_t over (B, T, D) arrays, for the CuPy backend
// (cupy_backend.py). Loaded with cupy.RawModule and compiled by NVRTC on first use.
// See docs/gpu.md for how the kernels work and how they are tested without a GPU.
//
// Layout. x, a and out are (B, T, D) with unit stride on D; their batch and time strides are passed
// in elements (int64), so time slices such as a[:, 1:] of a C-contiguous array are read in place
// (the batch stride is then T_parent * D, not T * D). h0 is (B, D) with unit stride on D and its own
// batch stride. reverse != 0 runs t = T-1 .. 0 with h_t = a_t * h_{t+1} + x_t and h0 standing for h_T.
// The launch planner (planner.py) always passes an h0 (zeros when the caller has none).
//
// Two strategies, chosen by the planner:
//   (a) scan_channels_*: one thread per (b, d) channel walks the whole sequence. Neighbouring threads
//       own neighbouring channels, so every step's loads and stores are coalesced across d.
//       For many channels (B * D at least the device's resident-thread capacity).
//   (b) for few channels and long sequences, time is cut into C chunks of L steps (the last may be
//       shorter) and the work is spread over (b, chunk, d) in three kernels launched in order:
//       1. scan_chunk_local_*: scan each chunk from a zero state (the first chunk in scan order starts
//          from h0, so its values are already final), writing the local h into out and recording the
//          chunk's product of a and its local end state;
//       2. scan_chunk_carry_*: one thread per (b, d) walks the C chunk summaries and records the state
//          entering each chunk (the carry);
//       3. scan_chunk_fixup_*: out_t += (product of a within the chunk up to and including t) * carry.
//       Three kernels, not one with __syncthreads: the steps need a grid-wide barrier, which only a
//       kernel boundary gives. No kernel uses shared memory, barriers or warp intrinsics, and every
//       thread writes only its own elements and reads only inputs or what earlier launches wrote, so
//       the threads of a launch are independent: the host shim (host_shim.h) runs them one after
//       another on the CPU, in any order, and must get the same answer.
//
// The multiply-then-add of each step is the reference backend's; the backend compiles with
// --fmad=false so the compiler does not fuse it into an FMA (see docs/gpu.md).
// No #include: NVRTC has no standard headers, and the host shim compiles this file as plain C++.

// Complex scans (complex64 / complex128, the CG-LRU's) run the same templates with F = scan_complex<R>: NumPy's
// layout (real part, then imaginary part), and the textbook product (ac - bd) + (ad + bc)i. No cuComplex:
// that needs a header, and the host shim must compile this file as plain C++.
template <typename R>
struct scan_complex {
    R re, im;
    __device__ __forceinline__ scan_complex(R r = R(0), R i = R(0)) : re(r), im(i) {}
};

template <typename R>
__device__ __forceinline__ scan_complex<R> operator*(scan_complex<R> p, scan_complex<R> q)
{
    return scan_complex<R>(p.re * q.re - p.im * q.im, p.re * q.im + p.im * q.re);
}

template <typename R>
__device__ __forceinline__ scan_complex<R> operator+(scan_complex<R> p, scan_complex<R> q)
{
    return scan_complex<R>(p.re + q.re, p.im + q.im);
}

template <typename F>
__device__ __forceinline__ void scan_channels(
    const F* __restrict__ x, const F* __restrict__ a, const F* __restrict__ h0, F* __restrict__ out,
    int n_batch, int n_steps, int n_chan, int reverse,
    long long x_sb, long long x_st, long long a_sb, long long a_st,
    long long out_sb, long long out_st, long long h0_sb)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;   // one thread per (b, d)
    if (i >= (long long)n_batch * n_chan) return;
    long long b = i / n_chan;
    long long d = i - b * n_chan;
    const F* xp = x + b * x_sb + d;
    const F* ap = a + b * a_sb + d;
    F* op = out + b * out_sb + d;
    F h = h0[b * h0_sb + d];
    for (int k = 0; k < n_steps; ++k) {
        long long t = reverse ? n_steps - 1 - k : k;
        h = ap[t * a_st] * h + xp[t * x_st];
        op[t * out_st] = h;
    }
}

template <typename F>
__device__ __forceinline__ void scan_chunk_local(
    const F* __restrict__ x, const F* __restrict__ a, const F* __restrict__ h0, F* __restrict__ out,
    F* __restrict__ chunk_prod, F* __restrict__ chunk_end,
    int n_batch, int n_steps, int n_chan, int chunk_len, int n_chunks, int reverse,
    long long x_sb, long long x_st, long long a_sb, long long a_st,
    long long out_sb, long long out_st, long long h0_sb)
{
    // One thread per (b, c, d), d fastest; chunk_prod and chunk_end are C-contiguous (B, C, D).
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n_batch * n_chunks * n_chan) return;
    long long d = i % n_chan;
    long long bc = i / n_chan;
    long long c = bc % n_chunks;
    long long b = bc / n_chunks;
    long long t0 = c * chunk_len;
    long long t1 = t0 + chunk_len < n_steps ? t0 + chunk_len : n_steps;
    long long first = reverse ? n_chunks - 1 : 0;          // the chunk the scan enters first
    const F* xp = x + b * x_sb + d;
    const F* ap = a + b * a_sb + d;
    F* op = out + b * out_sb + d;
    F h = c == first ? h0[b * h0_sb + d] : F(0);
    F p = F(1);
    for (long long k = 0; k < t1 - t0; ++k) {
        long long t = reverse ? t1 - 1 - k : t0 + k;
        F at = ap[t * a_st];
        h = at * h + xp[t * x_st];
        p = p * at;
        op[t * out_st] = h;
    }
    chunk_prod[i] = p;
    chunk_end[i] = h;
}

template <typename F>
__device__ __forceinline__ void scan_chunk_carry(
    const F* __restrict__ chunk_prod, const F* __restrict__ chunk_end, F* __restrict__ carry,
    int n_batch, int n_chan, int n_chunks, int reverse)
{
    // One thread per (b, d) walks its C chunk summaries in scan order. The first chunk's end state
    // already includes h0, so the state entering it is 0 (and the fix-up skips that chunk).
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n_batch * n_chan) return;
    long long b = i / n_chan;
    long long d = i - b * n_chan;
    F state = F(0);
    for (int k = 0; k < n_chunks; ++k) {
        long long c = reverse ? n_chunks - 1 - k : k;
        long long j = (b * n_chunks + c) * n_chan + d;
        carry[j] = state;
        state = chunk_prod[j] * state + chunk_end[j];
    }
}

template <typename F>
__device__ __forceinline__ void scan_chunk_fixup(
    const F* __restrict__ a, const F* __restrict__ carry, F* __restrict__ out,
    int n_batch, int n_steps, int n_chan, int chunk_len, int n_chunks, int reverse,
    long long a_sb, long long a_st, long long out_sb, long long out_st)
{
    // One thread per (b, c, d), as in scan_chunk_local: h_t = local_t + (a_t0 ... a_t) * carry.
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n_batch * n_chunks * n_chan) return;
    long long d = i % n_chan;
    long long bc = i / n_chan;
    long long c = bc % n_chunks;
    long long b = bc / n_chunks;
    if (c == (reverse ? n_chunks - 1 : 0)) return;         // the first chunk started from h0: final
    long long t0 = c * chunk_len;
    long long t1 = t0 + chunk_len < n_steps ? t0 + chunk_len : n_steps;
    const F* ap = a + b * a_sb + d;
    F* op = out + b * out_sb + d;
    F s = carry[i];
    F p = F(1);
    for (long long k = 0; k < t1 - t0; ++k) {
        long long t = reverse ? t1 - 1 - k : t0 + k;
        p = p * ap[t * a_st];
        op[t * out_st] = op[t * out_st] + p * s;
    }
}

// extern "C" entry points (unmangled names for RawModule.get_function), stamped for float, double and
// their complex pairs.
// Argument types are exact: pointers of the array dtype, int (np.int32) sizes, long long (np.int64)
// strides in elements. CuPy does not check them (docs/gpu.md); the host shim does.
#define SCAN_ENTRY_POINTS(F, SUFFIX)                                                                    \
extern "C" __global__ void scan_channels_##SUFFIX(                                                    \
    const F* x, const F* a, const F* h0, F* out, int n_batch, int n_steps, int n_chan, int reverse,  \
    long long x_sb, long long x_st, long long a_sb, long long a_st,                                   \
    long long out_sb, long long out_st, long long h0_sb)                                              \
{                                                                                                     \
    scan_channels<F>(x, a, h0, out, n_batch, n_steps, n_chan, reverse,                                \
                     x_sb, x_st, a_sb, a_st, out_sb, out_st, h0_sb);                                  \
}                                                                                                     \
extern "C" __global__ void scan_chunk_local_##SUFFIX(                                                 \
    const F* x, const F* a, const F* h0, F* out, F* chunk_prod, F* chunk_end,                         \
    int n_batch, int n_steps, int n_chan, int chunk_len, int n_chunks, int reverse,                   \
    long long x_sb, long long x_st, long long a_sb, long long a_st,                                   \
    long long out_sb, long long out_st, long long h0_sb)                                              \
{                                                                                                     \
    scan_chunk_local<F>(x, a, h0, out, chunk_prod, chunk_end, n_batch, n_steps, n_chan, chunk_len,    \
                        n_chunks, reverse, x_sb, x_st, a_sb, a_st, out_sb, out_st, h0_sb);            \
}                                                                                                     \
extern "C" __global__ void scan_chunk_carry_##SUFFIX(                                                 \
    const F* chunk_prod, const F* chunk_end, F* carry, int n_batch, int n_chan, int n_chunks,         \
    int reverse)                                                                                      \
{                                                                                                     \
    scan_chunk_carry<F>(chunk_prod, chunk_end, carry, n_batch, n_chan, n_chunks, reverse);            \
}                                                                                                     \
extern "C" __global__ void scan_chunk_fixup_##SUFFIX(                                                 \
    const F* a, const F* carry, F* out, int n_batch, int n_steps, int n_chan, int chunk_len,          \
    int n_chunks, int reverse, long long a_sb, long long a_st, long long out_sb, long long out_st)    \
{                                                                                                     \
    scan_chunk_fixup<F>(a, carry, out, n_batch, n_steps, n_chan, chunk_len, n_chunks, reverse,        \
                        a_sb, a_st, out_sb, out_st);                                                  \
}

SCAN_ENTRY_POINTS(float, f32)
SCAN_ENTRY_POINTS(double, f64)
SCAN_ENTRY_POINTS(scan_complex<float>, c64)
SCAN_ENTRY_POINTS(scan_complex<double>, c128)
