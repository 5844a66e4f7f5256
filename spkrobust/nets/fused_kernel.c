/* Fused multistep soft-reset IF/LIF neuron: the native kernel of spkrobust.nets.fused.
 *
 * Compiled on first use by spkrobust/nets/fused.py with the system C compiler (-O3 -ffp-contract=off,
 * no fast-math: `v*decay + x` rounds twice, exactly as SpikingJelly's `v * (1. - 1./tau) + x`),
 * cached per user and called through ctypes on [i0, i1) slices of the N neurons by a thread pool.
 * Tensors are float32, contiguous, laid out [T, N].  The ctypes signatures in fused.py
 * (_load_native) must match the two functions below.
 *
 * State: `vs` ([N] floats, may be NULL) is the membrane carried between calls (time chunks of one
 * forward pass): read as v[-1] before step 0 (NULL: v starts at 0) and overwritten with v after the
 * last step, so chunks 0..k then k..T give the same spikes as one call over 0..T, bit for bit.
 */
#include <math.h>
#include <stdint.h>
#define BLK 1024

/* One block of n neurons through all T steps: h[t] = decay*v + x[t]; s[t] = h[t] >= th;
   v = h[t] - s[t]*th.  For IF decay is 1 and v*1 == v exactly, so the same line serves both.
   `store_h` is a compile-time constant at each call site: the compiler emits two loops.
   `vs` (the carried state, NULL: start at rest) is read before and written after the loop. */
static inline __attribute__((always_inline)) void forward_block(
        const float *restrict x, float *restrict s, float *restrict h, float *restrict vs, int64_t T,
        int64_t N, int64_t b0, int64_t n, float th, float decay, const int store_h) {
    float v[BLK];
    if (vs) for (int64_t j = 0; j < n; j++) v[j] = vs[b0 + j];
    else for (int64_t j = 0; j < n; j++) v[j] = 0.0f;
    for (int64_t t = 0; t < T; t++) {
        const float *restrict xt = x + t * N + b0;
        float *restrict st = s + t * N + b0;
        float *restrict ht = store_h ? h + t * N + b0 : 0;
        for (int64_t j = 0; j < n; j++) {
            float p = v[j] * decay;
            float hv = p + xt[j];
            float sp = (float)(hv >= th);
            if (store_h) ht[j] = hv;
            st[j] = sp;
            v[j] = hv - sp * th;
        }
    }
    if (vs) for (int64_t j = 0; j < n; j++) vs[b0 + j] = v[j];
}

/* Forward over neurons [i0, i1); h (the charged potential, kept for backward) and vs (the carried
   membrane, [N]) may be NULL. */
void fused_forward(const float *restrict x, float *restrict s, float *restrict h, float *restrict vs, int64_t T,
                   int64_t N, int64_t i0, int64_t i1, float th, float decay) {
    for (int64_t b0 = i0; b0 < i1; b0 += BLK) {
        const int64_t n = i1 - b0 < BLK ? i1 - b0 : BLK;
        if (h) forward_block(x, s, h, vs, T, N, b0, n, th, decay, 1);
        else forward_block(x, s, h, vs, T, N, b0, n, th, decay, 0);
    }
}

/* Surrogate derivative d = sg'(h - th) of one block at one step.
   kind: 0 = given in `sgd` ([T, N]), 1 = piecewise linear (a, w), 2 = sigmoid (a), 3 = atan (a)
   (spkrobust.nets.neurons: each surrogate's `native_kind`). */
static inline void surrogate_block(const float *restrict ht, const float *restrict dt, float *restrict d,
                                   int64_t n, float th, int kind, float a, float w) {
    if (kind == 0) {
        for (int64_t j = 0; j < n; j++) d[j] = dt[j];
    } else if (kind == 1) {
        const float aw = a / w, iw = 1.0f / w;
        for (int64_t j = 0; j < n; j++) {
            float u = 1.0f - fabsf(ht[j] - th) * iw;
            d[j] = aw * (u > 0.0f ? u : 0.0f);
        }
    } else if (kind == 2) {
        for (int64_t j = 0; j < n; j++) {
            float sg = 1.0f / (1.0f + expf(-a * (ht[j] - th)));
            d[j] = a * sg * (1.0f - sg);
        }
    } else {
        const float c = 1.57079632679489661923f * a, a2 = 0.5f * a;
        for (int64_t j = 0; j < n; j++) {
            float z = c * (ht[j] - th);
            d[j] = a2 / (1.0f + z * z);
        }
    }
}

/* Reverse loop over neurons [i0, i1): d = sg'(h[t]-th); g = gs[t]*d + gv*(1 - th*d); gx[t] = g;
   gv = g*decay  (SpikingJelly's graph with detach_reset=False); with `detach` (the reset carries no
   gradient, detach_reset=True) g = gs[t]*d + gv.  gv starts at `gvs` ([N], dL/dv after the last
   step: the gradient the next time chunk sends back through the carried membrane; NULL: 0); the
   gradient to the membrane before step 0 is then decay*gx[0]. */
void fused_backward(const float *restrict h, const float *restrict gs, const float *restrict sgd,
                    const float *restrict gvs, float *restrict gx, int64_t T, int64_t N, int64_t i0, int64_t i1,
                    float th, float decay, int kind, float a, float w, int detach) {
    float gv[BLK], d[BLK];
    for (int64_t b0 = i0; b0 < i1; b0 += BLK) {
        const int64_t n = i1 - b0 < BLK ? i1 - b0 : BLK;
        if (gvs) for (int64_t j = 0; j < n; j++) gv[j] = gvs[b0 + j];
        else for (int64_t j = 0; j < n; j++) gv[j] = 0.0f;
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t o = t * N + b0;
            surrogate_block(h + o, kind == 0 ? sgd + o : 0, d, n, th, kind, a, w);
            const float *restrict gst = gs + o;
            float *restrict gxt = gx + o;
            if (detach) {
                for (int64_t j = 0; j < n; j++) {
                    float g = gst[j] * d[j] + gv[j];
                    gxt[j] = g;
                    gv[j] = g * decay;
                }
            } else {
                for (int64_t j = 0; j < n; j++) {
                    float g = gst[j] * d[j] + gv[j] * (1.0f - th * d[j]);
                    gxt[j] = g;
                    gv[j] = g * decay;
                }
            }
        }
    }
}
