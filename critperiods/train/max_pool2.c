/* 2x2 max-pool with stride 2 on channels-last float32 images, forward and backward.
 *
 * Bit for bit PyTorch's CPU kernel (cpu_max_pool_channels_last): the window is scanned in
 * row-major order and a value is taken when it is greater than the running maximum or NaN,
 * so the gradient goes to the first maximum (the last NaN); in the backward the winner gets
 * 0 + g (PyTorch zero-fills, then adds) and the other three +0.  Instead of int64 indices the
 * forward stores the winner's position in its window (0..3) as one byte.
 *
 * Layout: x is (B, H, W, C) contiguous (a channels-last (B, C, H, W) tensor), H and W even,
 * C a multiple of 8; out and the codes are (B, H/2, W/2, C).  Eight channels at a time with
 * GCC/Clang vector extensions: the compiler maps them to the CPU's vector unit.  No header
 * is included (the compiler's predefined types and builtins only), so a bare compiler will do.
 */
typedef __PTRDIFF_TYPE__ ptrdiff_t;
typedef __INT32_TYPE__ int32_t;
typedef __UINT8_TYPE__ uint8_t;
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t v8b __attribute__((vector_size(8)));

static inline v8f load(const float *p) { v8f v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, v8f v) { __builtin_memcpy(p, &v, sizeof v); }

/* One step of the scan: where v > m or v is NaN, take v and its position k. */
static inline void take(v8f v, int32_t k, v8f *m, v8i *at) {
    v8i t = (v > *m) | (v != v);
    *m = (v8f)((t & (v8i)v) | (~t & (v8i)*m));
    *at = (t & (v8i){k, k, k, k, k, k, k, k}) | (~t & *at);
}

void max_pool2_forward(const float *restrict x, float *restrict out, uint8_t *restrict code,
                       ptrdiff_t B, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C) {
    ptrdiff_t OW = W / 2;
    for (ptrdiff_t row = 0; row < B * (H / 2); row++) {
        const float *top = x + 2 * row * W * C, *bottom = top + W * C;
        for (ptrdiff_t ow = 0; ow < OW; ow++)
            for (ptrdiff_t c = 0; c < C; c += 8) {
                const float *a = top + 2 * ow * C + c, *b = bottom + 2 * ow * C + c;
                v8f m = load(a);
                v8i at = {0};
                take(load(a + C), 1, &m, &at);
                take(load(b), 2, &m, &at);
                take(load(b + C), 3, &m, &at);
                ptrdiff_t o = (row * OW + ow) * C + c;
                store(out + o, m);
                v8b k = __builtin_convertvector(at, v8b);
                __builtin_memcpy(code + o, &k, sizeof k);
            }
    }
}

void max_pool2_backward(const float *restrict grad_out, const uint8_t *restrict code,
                        float *restrict grad_x, ptrdiff_t B, ptrdiff_t H, ptrdiff_t W,
                        ptrdiff_t C) {
    ptrdiff_t OW = W / 2;
    const v8f zero = {0};
    for (ptrdiff_t row = 0; row < B * (H / 2); row++) {
        float *top = grad_x + 2 * row * W * C, *bottom = top + W * C;
        for (ptrdiff_t ow = 0; ow < OW; ow++)
            for (ptrdiff_t c = 0; c < C; c += 8) {
                ptrdiff_t o = (row * OW + ow) * C + c;
                v8b k;
                __builtin_memcpy(&k, code + o, sizeof k);
                v8i at = __builtin_convertvector(k, v8i);
                v8i g = (v8i)(zero + load(grad_out + o));
                float *a = top + 2 * ow * C + c, *b = bottom + 2 * ow * C + c;
                store(a, (v8f)(g & (at == 0)));
                store(a + C, (v8f)(g & (at == 1)));
                store(b, (v8f)(g & (at == 2)));
                store(b + C, (v8f)(g & (at == 3)));
            }
    }
}
