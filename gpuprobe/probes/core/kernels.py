"""CUDA C source of the probe kernels (compiled once per device through NVRTC by CuPy)."""

SOURCE = r"""
extern "C" {

// Blocks its stream until the host writes 1 to *flag (or ~timeout cycles pass; then *timed_out = 1).
// Everything enqueued behind it is released at once, so host enqueue time never enters a timed window.
__global__ void spin(volatile int* flag, volatile int* timed_out, unsigned long long timeout_cycles) {
    unsigned long long start = clock64();
    while (*flag == 0) {
        if (clock64() - start > timeout_cycles) { *timed_out = 1; break; }
    }
}

// Grid-stride copy of 16-byte elements with U independent loads in flight per thread.
__global__ void copy_u4(const uint4* __restrict__ src, uint4* __restrict__ dst, unsigned long long n) {
    const int U = 8;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (U - 1) * stride < n; i += U * stride) {
        uint4 v[U];
        #pragma unroll
        for (int u = 0; u < U; ++u) v[u] = __ldcg(src + i + u * stride);
        #pragma unroll
        for (int u = 0; u < U; ++u) __stcg(dst + i + u * stride, v[u]);
    }
    for (; i < n; i += stride) __stcg(dst + i, __ldcg(src + i));
}

__device__ __forceinline__ unsigned int pattern(unsigned long long i, unsigned int seed) {
    unsigned int x = (unsigned int)(i ^ (i >> 32)) * 2654435761u ^ seed;
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}

// buf[i] = pattern(i, seed) for 32-bit words.
__global__ void fill(unsigned int* buf, unsigned long long n, unsigned int seed) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        buf[i] = pattern(i, seed);
}

// Counts words that differ from pattern(i, seed).
__global__ void check(const unsigned int* buf, unsigned long long n, unsigned int seed, unsigned long long* wrong) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long bad = 0;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        bad += (buf[i] != pattern(i, seed));
    if (bad) atomicAdd(wrong, bad);
}

// Pointer chase: each load's address comes from the previous load (cache-volatile: fetched every time).
__global__ void chase(const unsigned long long* start, unsigned long long hops, unsigned long long* sink) {
    const unsigned long long* p = start;
    for (unsigned long long h = 0; h < hops; ++h) p = (const unsigned long long*)__ldcv(p);
    *sink = (unsigned long long)p;
}

}
"""
