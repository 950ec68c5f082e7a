// Multiresolution hash-grid encoding (Instant-NGP), forward and backward, on the CPU with OpenMP.
//
// Indexing and interpolation are those of threedistill/representations/hash_grid.py: per level, x in [0,1]^3 is
// scaled by the level's resolution, the cell is floor(x res) clamped to res - 1, corner c = 4 cx + 2 cy + cz is
// looked up densely ((res+1)^3 fits the table) or by the int32-wrapping spatial hash with primes
// (1, 2654435761, 805459861), and the 8 features are blended with trilinear weights. The backward pass gives the
// table's gradient only (the encoder's inputs are ray samples, which carry none).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

struct Corners {
    int64_t index[8];
    float weight[8];
};

inline Corners corners(const float* point, int64_t res, bool dense, int64_t table_size, int64_t offset) {
    int64_t cell[3];
    float frac[3];
    for (int a = 0; a < 3; ++a) {
        const float pos = std::min(std::max(point[a], 0.0f), 1.0f) * static_cast<float>(res);
        const float floor_pos = std::min(std::floor(pos), static_cast<float>(res - 1));
        cell[a] = static_cast<int64_t>(floor_pos);
        frac[a] = pos - floor_pos;
    }
    static const uint32_t primes[3] = {1u, 2654435761u, 805459861u};
    Corners out;
    for (int c = 0; c < 8; ++c) {
        const int64_t cx = cell[0] + ((c >> 2) & 1), cy = cell[1] + ((c >> 1) & 1), cz = cell[2] + (c & 1);
        int64_t idx;
        if (dense) {
            idx = (cx * (res + 1) + cy) * (res + 1) + cz;
        } else {
            const uint32_t h = (static_cast<uint32_t>(cx) * primes[0]) ^ (static_cast<uint32_t>(cy) * primes[1]) ^
                               (static_cast<uint32_t>(cz) * primes[2]);
            idx = static_cast<int64_t>(h & static_cast<uint32_t>(table_size - 1));
        }
        out.index[c] = idx + offset;
        const float wx = (c >> 2) & 1 ? frac[0] : 1.0f - frac[0];
        const float wy = (c >> 1) & 1 ? frac[1] : 1.0f - frac[1];
        const float wz = c & 1 ? frac[2] : 1.0f - frac[2];
        out.weight[c] = wx * wy * wz;
    }
    return out;
}

// dst[0:nf] = sum_c w_c table[index_c]; NF > 0 fixes nf at compile time (the common 2 features) so the loop unrolls.
template <int NF>
inline void gather(const Corners& cs, const float* tab, float* dst, int64_t nf) {
    const int64_t count = NF > 0 ? NF : nf;
    float acc[NF > 0 ? NF : 1];
    if (NF > 0) {
        for (int f = 0; f < NF; ++f) acc[f] = 0.0f;
        for (int c = 0; c < 8; ++c)
            for (int f = 0; f < NF; ++f) acc[f] += cs.weight[c] * tab[cs.index[c] * NF + f];
        for (int f = 0; f < NF; ++f) dst[f] = acc[f];
        return;
    }
    for (int64_t f = 0; f < count; ++f) dst[f] = 0.0f;
    for (int c = 0; c < 8; ++c)
        for (int64_t f = 0; f < count; ++f) dst[f] += cs.weight[c] * tab[cs.index[c] * count + f];
}

// grad[index_c] += w_c src for the 8 corners.
template <int NF>
inline void scatter(const Corners& cs, const float* src, float* grad, int64_t nf) {
    const int64_t count = NF > 0 ? NF : nf;
    for (int c = 0; c < 8; ++c) {
        float* dst = grad + cs.index[c] * count;
        for (int64_t f = 0; f < count; ++f) dst[f] += cs.weight[c] * src[f];
    }
}

}  // namespace

// points (N, 3) in [0,1]^3, table (rows, F); per level its resolution, whether it is dense, and its first row.
at::Tensor hash_grid_forward(const at::Tensor& points, const at::Tensor& table, const std::vector<int64_t>& resolutions,
                             const std::vector<bool>& dense, const std::vector<int64_t>& offsets, int64_t table_size, int64_t threads) {
    TORCH_CHECK(points.dtype() == at::kFloat && table.dtype() == at::kFloat, "native hash grid: float32 expected");
    TORCH_CHECK(points.is_contiguous() && table.is_contiguous(), "native hash grid: contiguous inputs expected");
    const int64_t n = points.size(0), nf = table.size(1), levels = static_cast<int64_t>(resolutions.size());
    const int64_t width = levels * nf;
    auto out = at::empty({n, width}, points.options());
    const float* x = points.data_ptr<float>();
    const float* tab = table.data_ptr<float>();
    float* o = out.data_ptr<float>();
    // Level-major: one level's table at a time stays in cache while every point reads it.
    for (int64_t l = 0; l < levels; ++l) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i = 0; i < n; ++i) {
            const Corners cs = corners(x + 3 * i, resolutions[l], dense[l], table_size, offsets[l]);
            float* dst = o + i * width + l * nf;
            if (nf == 2) gather<2>(cs, tab, dst, nf); else gather<0>(cs, tab, dst, nf);
        }
    }
    return out;
}

namespace {

// Adds level l's share of dL/dtable into grad (the full table's gradient, rows x F).
void scatter_level(const float* x, const float* g, float* grad, int64_t n, int64_t l, int64_t width, int64_t nf,
                   int64_t res, bool dense, int64_t table_size, int64_t offset) {
    for (int64_t i = 0; i < n; ++i) {
        const Corners cs = corners(x + 3 * i, res, dense, table_size, offset);
        const float* src = g + i * width + l * nf;
        if (nf == 2) scatter<2>(cs, src, grad, nf); else scatter<0>(cs, src, grad, nf);
    }
}

}  // namespace

// dL/dtable (rows, F) from dL/dout (N, levels * F). Levels own disjoint rows, so with at least as many levels as
// threads each thread takes whole levels and writes the one gradient directly; otherwise each thread scatters a
// share of the points into its own copy of the gradient, summed at the end.
at::Tensor hash_grid_backward(const at::Tensor& points, const at::Tensor& grad_out, int64_t rows,
                              const std::vector<int64_t>& resolutions, const std::vector<bool>& dense,
                              const std::vector<int64_t>& offsets, int64_t table_size, int64_t threads) {
    TORCH_CHECK(grad_out.dtype() == at::kFloat && grad_out.is_contiguous(), "native hash grid: contiguous float32 grad");
    const int64_t n = points.size(0), levels = static_cast<int64_t>(resolutions.size());
    const int64_t width = grad_out.size(1), nf = width / levels;
    const float* x = points.data_ptr<float>();
    const float* g = grad_out.data_ptr<float>();
    if (levels >= threads) {
        auto grad = at::zeros({rows, nf}, grad_out.options());
        float* out = grad.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int64_t l = levels - 1; l >= 0; --l)  // the finest (hashed, largest) levels first balance best
            scatter_level(x, g, out, n, l, width, nf, resolutions[l], dense[l], table_size, offsets[l]);
        return grad;
    }
    auto partial = at::zeros({threads, rows, nf}, grad_out.options());
    float* part = partial.data_ptr<float>();
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
#else
        const int64_t t = 0, count = 1;
#endif
        const int64_t begin = n * t / count, end = n * (t + 1) / count;
        for (int64_t l = 0; l < levels; ++l)
            scatter_level(x + 3 * begin, g + begin * width, part + t * rows * nf, end - begin, l, width, nf,
                          resolutions[l], dense[l], table_size, offsets[l]);
    }
    return threads == 1 ? partial[0] : partial.sum(0);
}
