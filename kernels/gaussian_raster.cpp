// Tile-based alpha compositing of projected 2D Gaussians, forward and backward, on the CPU with OpenMP.
//
// The same image formation as threedistill/renderers/gaussian_raster.py (pixel centres at +0.5, alpha =
// min(alpha_max, o exp(min(power, 0))), Gaussians below alpha_min skipped), plus 3DGS's early termination once
// the transmittance falls below t_min. Inputs come binned: `gauss_ids` lists, tile by tile and front to back,
// the Gaussians overlapping each tile, and tile t owns gauss_ids[tile_offsets[t] : tile_offsets[t + 1]]. Both
// passes take the pixels of a tile row kLanes at a time: one vectorisable test per Gaussian finds the lanes it may
// reach (`candidates`), and only those are evaluated, each pixel still in its own front-to-back order.
// Threads: the caller passes torch's thread count (the extension's OpenMP runtime may not be torch's).
// The backward pass walks each pixel's list back to front, recovering the transmittance by division (as 3DGS),
// and sums per-Gaussian gradients into one buffer per thread, reduced at the end (no atomics).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
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
    float power_min;  // below this exponent alpha < alpha_min: skipped without calling exp
    int64_t id;
};

// The pixel's alpha for one Gaussian (false when it is below alpha_min), with the intermediate values the
// backward pass needs. Forward and backward call this same function, so they skip exactly the same Gaussians.
inline bool evaluate(const Splat& s, float px, float py, float a_min, float a_max, float& dx, float& dy, float& power,
                     float& gauss, float& raw, float& alpha) {
    dx = px - s.mx;
    dy = py - s.my;
    power = -0.5f * (s.a * dx * dx + s.c * dy * dy) - s.b * dx * dy;
    if (power < s.power_min) return false;
    gauss = std::exp(std::min(power, 0.0f));
    raw = s.o * gauss;
    alpha = std::min(a_max, raw);
    return alpha >= a_min;
}

constexpr int kLanes = 8;  // pixels of a row tested together

// The bit mask of the lanes (pixel centres px[0..kLanes), one row py) where the Gaussian's exponent reaches
// power_min: the only pixels `evaluate` can accept. The same float arithmetic as `evaluate`, in a loop the compiler
// vectorises, so most misses cost a fraction of a scalar evaluation.
inline unsigned candidates(const Splat& s, const float* px, float py) {
    const float dy = py - s.my;
    float power[kLanes];
    for (int l = 0; l < kLanes; ++l) {
        const float dx = px[l] - s.mx;
        power[l] = -0.5f * (s.a * dx * dx + s.c * dy * dy) - s.b * dx * dy;
    }
    unsigned mask = 0;
    for (int l = 0; l < kLanes; ++l) mask |= static_cast<unsigned>(power[l] >= s.power_min) << l;
    return mask;
}

// The lowest set bit's position, clearing it.
inline int pop_lane(unsigned& mask) {
    const int l = __builtin_ctz(mask);
    mask &= mask - 1;
    return l;
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
        std::vector<double> acc(kLanes * nf);
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
                    float px[kLanes];
                    double trans[kLanes];
                    int64_t k_last[kLanes];
                    for (int l = 0; l < kLanes; ++l) px[l] = (xs + l) + 0.5f, trans[l] = 1.0, k_last[l] = 0;
                    std::fill(acc.begin(), acc.end(), 0.0);
                    unsigned active = (1u << lanes) - 1;  // lanes not yet terminated
                    float dx, dy, power, gauss, raw, alpha;
                    for (int64_t k = 0; k < count && active; ++k) {
                        const Splat& sp = splats[k];
                        for (unsigned hit = candidates(sp, px, py) & active; hit;) {
                            const int l = pop_lane(hit);
                            if (!evaluate(sp, px[l], py, sc.a_min, sc.a_max, dx, dy, power, gauss, raw, alpha)) continue;
                            const double w = alpha * trans[l];
                            const float* f_k = feats.data() + k * nf;
                            double* a_l = acc.data() + l * nf;
                            for (int64_t f = 0; f < nf; ++f) a_l[f] += w * f_k[f];
                            trans[l] *= 1.0 - alpha;
                            k_last[l] = k + 1;
                            if (trans[l] < t_min) active &= ~(1u << l);
                        }
                    }
                    for (int l = 0; l < lanes; ++l) {
                        const int64_t p = y * width + xs + l;
                        for (int64_t f = 0; f < nf; ++f) img[p * nf + f] = static_cast<float>(acc[l * nf + f]);
                        a_img[p] = static_cast<float>(1.0 - trans[l]);
                        t_img[p] = static_cast<float>(trans[l]);
                        last_img[p] = static_cast<int32_t>(k_last[l]);
                    }
                }
            }
        }
    }
    return {image, alpha_img, final_t, last};
}

// Gradients of a loss with dL/dimage (H, W, F) and dL/dalpha (H, W) with respect to means2d (N, 2),
// conics (N, 3), opacities (N) and features (N, F).
std::vector<at::Tensor> raster_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                                        const at::Tensor& features, const at::Tensor& tile_offsets,
                                        const at::Tensor& gauss_ids, const at::Tensor& final_t, const at::Tensor& last,
                                        const at::Tensor& grad_image, const at::Tensor& grad_alpha, int64_t tile,
                                        double alpha_min, double alpha_max, int64_t threads) {
    const int64_t height = final_t.size(0), width = final_t.size(1);
    const Scene sc(means2d, conics, opacities, features, tile_offsets, gauss_ids, height, width, tile, alpha_min, alpha_max);
    TORCH_CHECK(grad_image.is_contiguous() && grad_alpha.is_contiguous(), "native rasterizer: contiguous grads expected");
    const int64_t n = means2d.size(0), nf = sc.nf;
    const int64_t stride = 6 + nf;  // per Gaussian: mean x, y, conic a, b, c, opacity, features
    std::vector<double> buffers(static_cast<size_t>(threads) * n * stride, 0.0);
    const float* t_img = final_t.data_ptr<float>();
    const int32_t* last_img = last.data_ptr<int32_t>();
    const float* g_img = grad_image.data_ptr<float>();
    const float* g_alpha = grad_alpha.data_ptr<float>();

#pragma omp parallel num_threads(threads)
    {
        std::vector<Splat> splats;
        std::vector<float> feats;
        std::vector<double> behind(kLanes * nf);  // per lane: sum over the Gaussians behind of f_j alpha_j T_j
        double* grad = buffers.data() + static_cast<size_t>(thread_id()) * n * stride;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < sc.tile_count(); ++t) {
            if (sc.stage(t, splats, feats) == 0) continue;
            const int64_t x0 = (t % sc.tiles_x) * tile, y0 = (t / sc.tiles_x) * tile;
            const int64_t x_end = std::min(x0 + tile, width), y_end = std::min(y0 + tile, height);
            for (int64_t y = y0; y < y_end; ++y) {
                const float py = y + 0.5f;
                for (int64_t xs = x0; xs < x_end; xs += kLanes) {
                    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, x_end - xs));
                    const int64_t p0 = y * width + xs;
                    float px[kLanes];
                    double trans_after[kLanes];  // transmittance behind the current Gaussian
                    int64_t k_last[kLanes], k_max = 0;
                    for (int l = 0; l < kLanes; ++l) {
                        px[l] = (xs + l) + 0.5f;
                        trans_after[l] = l < lanes ? t_img[p0 + l] : 1.0;
                        k_last[l] = l < lanes ? last_img[p0 + l] : 0;
                        k_max = std::max(k_max, k_last[l]);
                    }
                    std::fill(behind.begin(), behind.end(), 0.0);
                    float dx, dy, power, gauss, raw, alpha;
                    for (int64_t k = k_max - 1; k >= 0; --k) {
                        const Splat& sp = splats[k];
                        unsigned live = 0;  // lanes that blended Gaussian k or one behind it
                        for (int l = 0; l < kLanes; ++l) live |= static_cast<unsigned>(k < k_last[l]) << l;
                        for (unsigned hit = candidates(sp, px, py) & live; hit;) {
                            const int l = pop_lane(hit);
                            if (!evaluate(sp, px[l], py, sc.a_min, sc.a_max, dx, dy, power, gauss, raw, alpha)) continue;
                            const int64_t p = p0 + l;
                            const float* d_col = g_img + p * nf;
                            const double t_final = t_img[p];
                            const double inv = 1.0 / (1.0 - alpha);  // one division, five uses
                            const double trans = trans_after[l] * inv;
                            const double w = alpha * trans;
                            double* gg = grad + sp.id * stride;
                            const float* f_k = feats.data() + k * nf;
                            double* b_l = behind.data() + l * nf;
                            double d_alpha = g_alpha[p] * t_final * inv;
                            for (int64_t f = 0; f < nf; ++f) {
                                gg[6 + f] += w * d_col[f];
                                d_alpha += d_col[f] * (f_k[f] * trans - b_l[f] * inv);
                                b_l[f] += f_k[f] * w;
                            }
                            trans_after[l] = trans;
                            if (raw > sc.a_max) continue;  // clamped: no gradient to opacity or shape
                            gg[5] += d_alpha * gauss;
                            if (power > 0.0f) continue;  // exp(min(power, 0)) is flat there
                            const double d_power = d_alpha * sp.o * gauss;
                            gg[0] += d_power * (sp.a * dx + sp.b * dy);
                            gg[1] += d_power * (sp.c * dy + sp.b * dx);
                            gg[2] += d_power * (-0.5 * dx * dx);
                            gg[3] += d_power * (-static_cast<double>(dx) * dy);
                            gg[4] += d_power * (-0.5 * dy * dy);
                        }
                    }
                }
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
            out.slice(1, 6, stride).contiguous()};
}
