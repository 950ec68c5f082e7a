// Tile-based alpha compositing of projected 2D Gaussians, forward and backward, on the CPU with OpenMP.
//
// The same image formation as threedistill/renderers/gaussian_raster.py (pixel centres at +0.5, alpha =
// min(alpha_max, o exp(min(power, 0))), Gaussians below alpha_min skipped), plus 3DGS's early termination once
// the transmittance falls below t_min. Inputs come binned: `gauss_ids` lists, tile by tile and front to back,
// the Gaussians overlapping each tile, and tile t owns gauss_ids[tile_offsets[t] : tile_offsets[t + 1]]. Both
// passes take the pixels of a tile row kLanes at a time, each pixel still in its own front-to-back order: every
// step over a Gaussian is branch-free arithmetic over the lanes (`evaluate`, with a vectorisable exp), so the
// compiler turns it into vector instructions; a lane the Gaussian does not reach blends alpha 0, an exact no-op.
// Threads: the caller passes torch's thread count (the extension's OpenMP runtime may not be torch's).
// The backward pass walks each pixel's list back to front, recovering the transmittance by division (as 3DGS),
// and sums per-Gaussian gradients into one buffer per thread, reduced at the end (no atomics).
// Precision: the per-pixel arithmetic is float32, as in 3DGS and gsplat (colour and transmittance along a pixel's
// list, the backward pass's running sums); each tile's per-Gaussian gradient sums go into double per-thread buffers.
// float32 lanes take half the vector width of double ones: forward + backward 2.3-2.7x faster than with double
// lanes on AVX2 (docs/benchmarks/performance.md).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// One Gaussian of a tile's list, gathered so the per-pixel loops read contiguous memory.
struct Splat {
    float mx, my, a, b, c, o;
    float power_min;  // below this exponent alpha < alpha_min
    int64_t id;
};

constexpr int kLanes = 8;  // pixels of a row evaluated together, as one vector

// GCC / Clang vector extensions: element-wise arithmetic the compiler maps onto AVX-512, AVX2 or SSE2 registers.
typedef float F8 __attribute__((vector_size(4 * kLanes)));
typedef int32_t I8 __attribute__((vector_size(4 * kLanes)));
typedef double D8 __attribute__((vector_size(8 * kLanes)));

inline bool any(I8 mask) {
    int32_t bits = 0;
    for (int l = 0; l < kLanes; ++l) bits |= mask[l];
    return bits != 0;
}

// exp(x) for x <= 0, element-wise: Cody-Waite reduction by ln 2 and Cephes' degree-6 polynomial, within 1 ulp of
// the exact exp (0.99 at most, 0.27 on average over 3M points of [-87, 0] in IEEE float32 without fused
// multiply-adds); glibc's expf has no vector form without -ffast-math. The rounding to the nearest integer adds
// and subtracts 1.5 x 2^23. Below -87 it returns about exp(-87).
inline F8 exp_nonpositive(F8 x) {
    x = x < -87.0f ? F8{} - 87.0f : x;
    const F8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const F8 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    F8 p = F8{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const I8 bits = (__builtin_convertvector(n, I8) + 127) << 23;
    return p * (F8)bits;  // the bits of 2^n
}

// One Gaussian at the kLanes pixels (px, py) of a row: the offsets dx, the exponent, exp(min(power, 0)) (gauss),
// o x that (raw) and alpha = min(alpha_max, raw), and `blend`, the lanes where it blends: power >= power_min,
// alpha >= alpha_min and in `lanes`. Forward and backward call this same function, so they blend exactly the same
// (pixel, Gaussian) pairs. Returns whether any lane blends.
struct Eval {
    F8 dx, power, gauss, raw, alpha;
    I8 blend;
};

inline bool evaluate(const Splat& s, F8 px, float py, float a_min, float a_max, I8 lanes, Eval& e) {
    const float dy = py - s.my;
    e.dx = px - s.mx;
    e.power = -0.5f * (s.a * e.dx * e.dx + s.c * dy * dy) - s.b * e.dx * dy;
    const I8 reach = (e.power >= s.power_min) & lanes;
    if (!any(reach)) return false;  // most Gaussians of a tile's list miss most rows: no exp for them
    e.gauss = exp_nonpositive(e.power < 0.0f ? e.power : F8{});
    e.raw = s.o * e.gauss;
    e.alpha = e.raw < a_max ? e.raw : F8{} + a_max;
    e.blend = reach & (e.alpha >= a_min);
    return any(e.blend);
}

// The sum of a lane vector in double, pairwise (a fixed order).
inline double sum_lanes(F8 lanes) {
    const D8 v = __builtin_convertvector(lanes, D8);
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

// The binned inputs shared by both passes: raw pointers, tile geometry and the alpha thresholds.
struct Scene {
    const float *m, *con, *op, *feat;
    const int64_t *offs, *ids;
    int64_t nf, tile, tiles_x, tiles_y;
    float a_min, a_max;  // compared in float32, as the PyTorch path does

    Scene(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities, const at::Tensor& features,
          const at::Tensor& tile_offsets, const at::Tensor& gauss_ids, int64_t height, int64_t width, int64_t tile_,
          double alpha_min, double alpha_max)
        : nf(features.size(1)), tile(tile_), tiles_x((width + tile_ - 1) / tile_), tiles_y((height + tile_ - 1) / tile_),
          a_min(static_cast<float>(alpha_min)),
          a_max(static_cast<float>(alpha_max)) {
        TORCH_CHECK(means2d.dtype() == at::kFloat && conics.dtype() == at::kFloat && opacities.dtype() == at::kFloat &&
                    features.dtype() == at::kFloat, "native rasterizer: float32 inputs expected");
        TORCH_CHECK(tile_offsets.dtype() == at::kLong && gauss_ids.dtype() == at::kLong, "native rasterizer: int64 bins");
        TORCH_CHECK(means2d.is_contiguous() && conics.is_contiguous() && opacities.is_contiguous() &&
                    features.is_contiguous() && tile_offsets.is_contiguous() && gauss_ids.is_contiguous(),
                    "native rasterizer: contiguous inputs expected");
        m = means2d.data_ptr<float>();
        con = conics.data_ptr<float>();
        op = opacities.data_ptr<float>();
        feat = features.data_ptr<float>();
        offs = tile_offsets.data_ptr<int64_t>();
        ids = gauss_ids.data_ptr<int64_t>();
    }

    int64_t tile_count() const { return tiles_x * tiles_y; }

    // Gathers tile t's Gaussians (front to back) and their features; returns how many there are.
    int64_t stage(int64_t t, std::vector<Splat>& splats, std::vector<float>& feats) const {
        const int64_t begin = offs[t], count = offs[t + 1] - offs[t];
        splats.resize(count);
        feats.resize(count * nf);
        for (int64_t k = 0; k < count; ++k) {
            const int64_t g = ids[begin + k];
            const float o = op[g];
            splats[k] = {m[2 * g], m[2 * g + 1], con[3 * g], con[3 * g + 1], con[3 * g + 2], o,
                         o >= a_min ? std::log(a_min / o) - 1e-4f : std::numeric_limits<float>::infinity(), g};
            std::copy(feat + g * nf, feat + (g + 1) * nf, feats.begin() + k * nf);
        }
        return count;
    }
};

}  // namespace

// Tile binning: for every Gaussian with a radius > 0, the tiles its footprint box touches: mean +- radius on both
// axes for radii of shape (N,), mean +- (radius_x, radius_y) for radii of shape (N, 2) (`footprint` in
// gaussian_raster.py: the opacity-aware box, about half the pairs of the square one).
// Returns tile_offsets (tiles + 1) and gauss_ids, grouped by tile and front to back inside each tile, ties in index
// order: the same lists as the PyTorch path's two stable sorts. The visible Gaussians are stable-sorted by depth
// once and then dealt out to their tiles in that order, which leaves every tile's list sorted.
std::vector<at::Tensor> bin_gaussians(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                                      int64_t tiles_x, int64_t tiles_y, int64_t tile) {
    TORCH_CHECK(means2d.dtype() == at::kFloat && radii.dtype() == at::kFloat && depths.dtype() == at::kFloat &&
                means2d.is_contiguous() && radii.is_contiguous() && depths.is_contiguous(),
                "native binning: contiguous float32 inputs expected");
    TORCH_CHECK(radii.dim() == 1 || (radii.dim() == 2 && radii.size(1) == 2), "native binning: radii (N,) or (N, 2)");
    const int64_t n = means2d.size(0), n_tiles = tiles_x * tiles_y;
    const int64_t r_step = radii.dim() == 2 ? 2 : 1, r_y = radii.dim() == 2 ? 1 : 0;  // x radius, then y radius
    const float* m = means2d.data_ptr<float>();
    const float* r = radii.data_ptr<float>();
    const float* d = depths.data_ptr<float>();
    std::vector<int64_t> box(4 * n, 0);  // x0, x1, y0, y1 per Gaussian (empty when not visible)
    std::vector<std::pair<float, int64_t>> order;  // (depth, index) of the visible Gaussians
    order.reserve(n);
    auto offsets = at::zeros({n_tiles + 1}, at::TensorOptions().dtype(at::kLong));
    int64_t* offs = offsets.data_ptr<int64_t>();
    const auto cell = [tile](float v, int64_t count) {
        return std::min(std::max(static_cast<int64_t>(std::floor(v / static_cast<float>(tile))), int64_t(0)), count - 1);
    };
    for (int64_t g = 0; g < n; ++g) {
        const float rx = r[r_step * g], ry = r[r_step * g + r_y];
        if (!(rx > 0.0f && ry > 0.0f)) continue;
        int64_t* b = box.data() + 4 * g;
        b[0] = cell(m[2 * g] - rx, tiles_x);
        b[1] = cell(m[2 * g] + rx, tiles_x);
        b[2] = cell(m[2 * g + 1] - ry, tiles_y);
        b[3] = cell(m[2 * g + 1] + ry, tiles_y);
        for (int64_t ty = b[2]; ty <= b[3]; ++ty)
            for (int64_t tx = b[0]; tx <= b[1]; ++tx) ++offs[ty * tiles_x + tx + 1];
        order.emplace_back(d[g], g);
    }
    for (int64_t t = 0; t < n_tiles; ++t) offs[t + 1] += offs[t];
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    auto ids = at::empty({offs[n_tiles]}, offsets.options());
    int64_t* out = ids.data_ptr<int64_t>();
    std::vector<int64_t> fill(offs, offs + n_tiles);
    for (const auto& entry : order) {
        const int64_t g = entry.second;
        const int64_t* b = box.data() + 4 * g;
        for (int64_t ty = b[2]; ty <= b[3]; ++ty)
            for (int64_t tx = b[0]; tx <= b[1]; ++tx) out[fill[ty * tiles_x + tx]++] = g;
    }
    return {offsets, ids};
}

// Returns image (H, W, F), alpha (H, W), the final transmittance (H, W) and, per pixel, one past the position in
// its tile's list of the last Gaussian it blended (int32, H x W); the backward pass needs the last two.
std::vector<at::Tensor> raster_forward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                                       const at::Tensor& features, const at::Tensor& tile_offsets,
                                       const at::Tensor& gauss_ids, int64_t height, int64_t width, int64_t tile,
                                       double alpha_min, double alpha_max, double t_min, int64_t threads) {
    const Scene sc(means2d, conics, opacities, features, tile_offsets, gauss_ids, height, width, tile, alpha_min, alpha_max);
    const int64_t nf = sc.nf;
    auto image = at::zeros({height, width, nf}, features.options());
    auto alpha_img = at::zeros({height, width}, features.options());
    auto final_t = at::ones({height, width}, features.options());
    auto last = at::zeros({height, width}, tile_offsets.options().dtype(at::kInt));
    float* img = image.data_ptr<float>();
    float* a_img = alpha_img.data_ptr<float>();
    float* t_img = final_t.data_ptr<float>();
    int32_t* last_img = last.data_ptr<int32_t>();

#pragma omp parallel num_threads(threads)
    {
        std::vector<Splat> splats;
        std::vector<float> feats;
        std::vector<F8> acc(nf);  // per feature, the lanes' blended sums
        Eval e;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < sc.tile_count(); ++t) {
            const int64_t count = sc.stage(t, splats, feats);
            if (count == 0) continue;
            const int64_t x0 = (t % sc.tiles_x) * tile, y0 = (t / sc.tiles_x) * tile;
            const int64_t x_end = std::min(x0 + tile, width), y_end = std::min(y0 + tile, height);
            for (int64_t y = y0; y < y_end; ++y) {
                const float py = y + 0.5f;
                for (int64_t xs = x0; xs < x_end; xs += kLanes) {
                    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, x_end - xs));
                    F8 px;
                    I8 active, k_last = I8{};  // active: lanes in the image and not yet terminated
                    for (int l = 0; l < kLanes; ++l) px[l] = (xs + l) + 0.5f, active[l] = l < lanes ? -1 : 0;
                    F8 trans = F8{} + 1.0f;
                    std::fill(acc.begin(), acc.end(), F8{});
                    for (int64_t k = 0; k < count && any(active); ++k) {
                        if (!evaluate(splats[k], px, py, sc.a_min, sc.a_max, active, e)) continue;
                        // alpha where the lane blends, else 0: the other lanes stay exactly as they were
                        const F8 a = e.blend ? e.alpha : F8{};
                        const F8 w = a * trans;
                        const float* f_k = feats.data() + k * nf;
                        for (int64_t f = 0; f < nf; ++f) acc[f] += w * f_k[f];
                        trans *= 1.0f - a;
                        k_last = e.blend ? I8{} + static_cast<int32_t>(k + 1) : k_last;
                        active &= trans >= static_cast<float>(t_min);
                    }
                    for (int l = 0; l < lanes; ++l) {
                        const int64_t p = y * width + xs + l;
                        for (int64_t f = 0; f < nf; ++f) img[p * nf + f] = acc[f][l];
                        a_img[p] = 1.0f - trans[l];
                        t_img[p] = trans[l];
                        last_img[p] = k_last[l];
                    }
                }
            }
        }
    }
    return {image, alpha_img, final_t, last};
}

// Gradients of a loss with dL/dimage (H, W, F) and dL/dalpha (H, W) with respect to means2d (N, 2),
// conics (N, 3), opacities (N) and features (N, F); then, per Gaussian, the sums over pixels of the magnitudes of
// each pixel's contribution to the means2d gradient (N, 2; AbsGS / gsplat's absgrad, for densification).
std::vector<at::Tensor> raster_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                                        const at::Tensor& features, const at::Tensor& tile_offsets,
                                        const at::Tensor& gauss_ids, const at::Tensor& final_t, const at::Tensor& last,
                                        const at::Tensor& grad_image, const at::Tensor& grad_alpha, int64_t tile,
                                        double alpha_min, double alpha_max, int64_t threads) {
    const int64_t height = final_t.size(0), width = final_t.size(1);
    const Scene sc(means2d, conics, opacities, features, tile_offsets, gauss_ids, height, width, tile, alpha_min, alpha_max);
    TORCH_CHECK(grad_image.is_contiguous() && grad_alpha.is_contiguous(), "native rasterizer: contiguous grads expected");
    const int64_t n = means2d.size(0), nf = sc.nf;
    const int64_t stride = 8 + nf;  // per Gaussian: mean x, y, conic a, b, c, opacity, |mean x|, |mean y|, features
    std::vector<double> buffers(static_cast<size_t>(threads) * n * stride, 0.0);
    const float* t_img = final_t.data_ptr<float>();
    const int32_t* last_img = last.data_ptr<int32_t>();
    const float* g_img = grad_image.data_ptr<float>();
    const float* g_alpha = grad_alpha.data_ptr<float>();

#pragma omp parallel num_threads(threads)
    {
        std::vector<Splat> splats;
        std::vector<float> feats;
        std::vector<F8> behind(nf);  // per feature and lane: sum over the Gaussians behind of f_j alpha_j T_j
        std::vector<F8> d_col(nf);   // per feature and lane: dL/dimage
        std::vector<F8> tile_grad;   // per Gaussian of the tile's list: its `stride` gradients, per lane
        std::vector<char> touched;   // which of them got any
        Eval e;
        double* grad = buffers.data() + static_cast<size_t>(thread_id()) * n * stride;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < sc.tile_count(); ++t) {
            const int64_t count = sc.stage(t, splats, feats);
            if (count == 0) continue;
            if (static_cast<int64_t>(tile_grad.size()) < count * stride) tile_grad.resize(count * stride, F8{});
            touched.assign(count, 0);
            const int64_t x0 = (t % sc.tiles_x) * tile, y0 = (t / sc.tiles_x) * tile;
            const int64_t x_end = std::min(x0 + tile, width), y_end = std::min(y0 + tile, height);
            for (int64_t y = y0; y < y_end; ++y) {
                const float py = y + 0.5f;
                for (int64_t xs = x0; xs < x_end; xs += kLanes) {
                    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, x_end - xs));
                    const int64_t p0 = y * width + xs;
                    F8 px;
                    F8 trans_after = F8{} + 1.0f;  // transmittance behind the current Gaussian
                    F8 d_final = F8{};             // dL/dalpha x final transmittance
                    I8 k_last = I8{};
                    int32_t k_max = 0;
                    for (int64_t f = 0; f < nf; ++f) d_col[f] = F8{};
                    for (int l = 0; l < kLanes; ++l) {
                        px[l] = (xs + l) + 0.5f;
                        if (l >= lanes) continue;
                        trans_after[l] = t_img[p0 + l];
                        d_final[l] = g_alpha[p0 + l] * t_img[p0 + l];
                        k_last[l] = last_img[p0 + l];
                        k_max = std::max(k_max, k_last[l]);
                        for (int64_t f = 0; f < nf; ++f) d_col[f][l] = g_img[(p0 + l) * nf + f];
                    }
                    std::fill(behind.begin(), behind.end(), F8{});
                    for (int32_t k = k_max - 1; k >= 0; --k) {
                        const Splat& sp = splats[k];
                        // lanes that blended Gaussian k or one behind it
                        if (!evaluate(sp, px, py, sc.a_min, sc.a_max, k < k_last, e)) continue;
                        // Lanes that do not blend get alpha 0: their transmittance and sums stay exactly as they were.
                        const F8 a = e.blend ? e.alpha : F8{};
                        const F8 inv = 1.0f / (1.0f - a);
                        const F8 trans = trans_after * inv;
                        const F8 w = a * trans;
                        F8 d_alpha = d_final * inv;
                        F8* gg = tile_grad.data() + k * stride;
                        touched[k] = 1;
                        const float* f_k = feats.data() + k * nf;
                        for (int64_t f = 0; f < nf; ++f) {
                            const float v = f_k[f];
                            gg[8 + f] += w * d_col[f];
                            d_alpha += d_col[f] * (v * trans - behind[f] * inv);
                            behind[f] += v * w;
                        }
                        trans_after = trans;
                        // Opacity: not where alpha is clamped at alpha_max; shape: not where exp(min(power, 0)) is flat.
                        const I8 opacity = e.blend & (e.raw <= sc.a_max);
                        const I8 shape = opacity & (e.power <= 0.0f);
                        const F8 d_power = shape ? d_alpha * sp.o * e.gauss : F8{};
                        const float dy = py - sp.my;
                        const F8 g_x = d_power * (sp.a * e.dx + sp.b * dy);
                        const F8 g_y = d_power * (sp.c * dy + sp.b * e.dx);
                        gg[0] += g_x;
                        gg[1] += g_y;
                        gg[6] += g_x < 0.0f ? -g_x : g_x;  // AbsGS: per-pixel magnitudes, which do not cancel
                        gg[7] += g_y < 0.0f ? -g_y : g_y;
                        gg[2] += d_power * (-0.5f * e.dx * e.dx);
                        gg[3] += d_power * (-e.dx * dy);
                        gg[4] += d_power * (-0.5f * dy * dy);
                        gg[5] += opacity ? d_alpha * e.gauss : F8{};
                    }
                }
            }
            // The tile's sums, lanes and rows together, into the thread's per-Gaussian buffer (zeroed for the next tile).
            for (int64_t k = 0; k < count; ++k) {
                if (!touched[k]) continue;
                F8* gk = tile_grad.data() + k * stride;
                double* gg = grad + splats[k].id * stride;
                for (int64_t j = 0; j < stride; ++j) gg[j] += sum_lanes(gk[j]), gk[j] = F8{};
            }
        }
    }
    auto out = at::zeros({n, stride}, at::TensorOptions().dtype(at::kDouble));
    double* o = out.data_ptr<double>();
#pragma omp parallel for num_threads(threads)
    for (int64_t i = 0; i < n * stride; ++i) {
        double s = 0.0;
        for (int th = 0; th < threads; ++th) s += buffers[static_cast<size_t>(th) * n * stride + i];
        o[i] = s;
    }
    out = out.to(at::kFloat);
    return {out.slice(1, 0, 2).contiguous(), out.slice(1, 2, 5).contiguous(), out.select(1, 5).contiguous(),
            out.slice(1, 8, stride).contiguous(), out.slice(1, 6, 8).contiguous()};
}
