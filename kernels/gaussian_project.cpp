// Per-camera preparation of 3D Gaussians for the compositing kernel, forward and backward, on the CPU with OpenMP:
// the EWA projection (project_forward / project_backward) and the per-Gaussian features seen from the camera
// (features_forward / features_backward: spherical-harmonics colour, distance, normal).
//
// The maths is that of threedistill/renderers/gaussian_raster.py (quat_to_rotmat, covariances, project, sh_to_rgb,
// _camera_features; the 2D covariance J V Sigma V^T J^T taken as U U^T with U = J V R diag(scales), which is
// cheaper), including its clamps: F.normalize's 1e-12, the near plane, the
// Jacobian's evaluation point clamped to 1.3x the frustum, the determinant's 1e-10, the direction's 1e-8 and the
// colour's clamp at 0. Gradients are written out by hand and pass through a clamp exactly where torch's clamp
// backward does (input >= bound). Everything is computed in double and stored in the inputs' dtype (float32 or
// float64, the latter for gradient checks); comparisons that decide culling are made on the stored values, as the
// PyTorch path makes them in its own dtype. The backward passes recompute the forward per Gaussian (cheap)
// instead of saving intermediates. Threads: the caller passes torch's thread count, as for the other kernels.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr double kQuatEps = 1e-12;  // F.normalize's eps
constexpr double kDetMin = 1e-10;   // the conic's determinant clamp
constexpr double kDirEps = 1e-8;    // the view direction's distance clamp
constexpr int64_t kGrain = 1024;    // Gaussians per thread at least: below, a parallel region costs more than it saves

// The threads worth using for n Gaussians (at most the caller's count).
int64_t threads_for(int64_t n, int64_t threads) {
    return std::max<int64_t>(1, std::min<int64_t>(threads, n / kGrain));
}

// The camera of one view: world-to-camera rotation V and translation t, pinhole intrinsics, image size, near plane,
// low-pass filter and the Jacobian's clamp limits (in tan units).
struct Camera {
    double V[9], t[3], fx, fy, cx, cy, near, eps2d, lim_x, lim_y;
    int64_t width, height;

    Camera(const at::Tensor& viewmat, const at::Tensor& K, int64_t height_, int64_t width_, double near_, double eps2d_)
        : near(near_), eps2d(eps2d_), width(width_), height(height_) {
        const auto vm = viewmat.to(at::kDouble).contiguous();
        const auto k = K.to(at::kDouble).contiguous();
        const double* v = vm.data_ptr<double>();
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) V[3 * i + j] = v[4 * i + j];
            t[i] = v[4 * i + 3];
        }
        const double* kk = k.data_ptr<double>();
        fx = kk[0], fy = kk[4], cx = kk[2], cy = kk[5];
        lim_x = 1.3 * 0.5 * width / fx;
        lim_y = 1.3 * 0.5 * height / fy;
    }
};

// Unit quaternion (w, x, y, z) of q (F.normalize: divided by max(|q|, 1e-12)); returns the divisor.
inline double normalise(const double q[4], double u[4]) {
    const double norm = std::max(std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]), kQuatEps);
    for (int i = 0; i < 4; ++i) u[i] = q[i] / norm;
    return norm;
}

// Row-major rotation matrix of a unit quaternion (quat_to_rotmat).
inline void rotmat(const double u[4], double R[9]) {
    const double w = u[0], x = u[1], y = u[2], z = u[3];
    R[0] = 1 - 2 * (y * y + z * z), R[1] = 2 * (x * y - w * z), R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z), R[4] = 1 - 2 * (x * x + z * z), R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y), R[7] = 2 * (y * z + w * x), R[8] = 1 - 2 * (x * x + y * y);
}

// dL/dq of the raw quaternion q (norm = normalise's divisor, u = q / norm) from dL/dR.
inline void rotmat_backward(const double q[4], const double u[4], double norm, const double dR[9], double dq[4]) {
    const double w = u[0], x = u[1], y = u[2], z = u[3];
    double du[4];
    du[0] = 2 * (-z * dR[1] + y * dR[2] + z * dR[3] - x * dR[5] - y * dR[6] + x * dR[7]);
    du[1] = 2 * (y * dR[1] + z * dR[2] + y * dR[3] - 2 * x * dR[4] - w * dR[5] + z * dR[6] + w * dR[7] - 2 * x * dR[8]);
    du[2] = 2 * (-2 * y * dR[0] + x * dR[1] + w * dR[2] + x * dR[3] + z * dR[5] - w * dR[6] + z * dR[7] - 2 * y * dR[8]);
    du[3] = 2 * (-2 * z * dR[0] - w * dR[1] + x * dR[2] + w * dR[3] - 2 * z * dR[4] + y * dR[5] + x * dR[6] + y * dR[7]);
    const double raw_norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const double along = u[0] * du[0] + u[1] * du[1] + u[2] * du[2] + u[3] * du[3];
    for (int i = 0; i < 4; ++i) dq[i] = raw_norm >= kQuatEps ? (du[i] - u[i] * along) / norm : du[i] / norm;
}

// Everything the projection of one Gaussian computes, kept for the backward pass. With T = J V (the Jacobian
// times the view rotation, 2x3) and U = T M (M = R diag(scales)), the 2D covariance J V Sigma V^T J^T is U U^T.
struct Projection {
    double u[4], norm, R[9], M[9];  // unit quaternion, its divisor, rotation, M = R diag(scales)
    double p[3];                    // camera-space mean
    double tz_s, ux, uy, uxc, uyc;  // clamped depth, tan-space position, clamped for the Jacobian
    double J00, J02, J11, J12;      // the Jacobian's non-zero entries
    double T[6], U[6];              // J V and J V M, row-major 2x3
    double a, b, c, det_raw, det;   // 2D covariance (upper triangle) and its determinant, raw and clamped
    double mx, my, radius;          // pixel mean and radius (before culling)
};

// Forward EWA projection of one Gaussian (project + covariances in gaussian_raster.py).
inline Projection project_one(const Camera& cam, const double m[3], const double s[3], const double q[4]) {
    Projection P;
    P.norm = normalise(q, P.u);
    rotmat(P.u, P.R);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) P.M[3 * i + j] = P.R[3 * i + j] * s[j];
    const double* V = cam.V;
    for (int i = 0; i < 3; ++i) P.p[i] = V[3 * i] * m[0] + V[3 * i + 1] * m[1] + V[3 * i + 2] * m[2] + cam.t[i];
    P.tz_s = std::max(P.p[2], cam.near);
    P.ux = P.p[0] / P.tz_s, P.uy = P.p[1] / P.tz_s;
    P.uxc = std::min(std::max(P.ux, -cam.lim_x), cam.lim_x);
    P.uyc = std::min(std::max(P.uy, -cam.lim_y), cam.lim_y);
    P.J00 = cam.fx / P.tz_s, P.J02 = -cam.fx * P.uxc / P.tz_s;
    P.J11 = cam.fy / P.tz_s, P.J12 = -cam.fy * P.uyc / P.tz_s;
    for (int i = 0; i < 3; ++i) {
        P.T[i] = P.J00 * V[i] + P.J02 * V[6 + i];
        P.T[3 + i] = P.J11 * V[3 + i] + P.J12 * V[6 + i];
    }
    for (int r = 0; r < 2; ++r)
        for (int j = 0; j < 3; ++j)
            P.U[3 * r + j] = P.T[3 * r] * P.M[j] + P.T[3 * r + 1] * P.M[3 + j] + P.T[3 * r + 2] * P.M[6 + j];
    const double* U = P.U;
    P.a = U[0] * U[0] + U[1] * U[1] + U[2] * U[2] + cam.eps2d;
    P.b = U[0] * U[3] + U[1] * U[4] + U[2] * U[5];
    P.c = U[3] * U[3] + U[4] * U[4] + U[5] * U[5] + cam.eps2d;
    P.det_raw = P.a * P.c - P.b * P.b;
    P.det = std::max(P.det_raw, kDetMin);
    P.mx = cam.fx * P.ux + cam.cx, P.my = cam.fy * P.uy + cam.cy;
    const double mid = 0.5 * (P.a + P.c);
    const double lam = mid + std::sqrt(std::max(mid * mid - P.det, 0.01));
    P.radius = std::ceil(3.33 * std::sqrt(lam));  // exp(-3.33^2/2) ~ 1/255
    return P;
}

// dL/d(means, scales, quats) of one Gaussian from dL/dmeans2d (gm) and dL/dconics (gc).
inline void project_one_backward(const Camera& cam, const double s[3], const double q[4], const Projection& P,
                                 const double gm[2], const double gc[3], double dm[3], double ds[3], double dq[4]) {
    // conic = (c, -b, a) / det
    double da = gc[2] / P.det, db = -gc[1] / P.det, dc = gc[0] / P.det;
    if (P.det_raw >= kDetMin) {
        const double d_det = -(gc[0] * P.c - gc[1] * P.b + gc[2] * P.a) / (P.det * P.det);
        da += d_det * P.c, dc += d_det * P.a, db -= 2 * d_det * P.b;
    }
    // (a, b, c) = U U^T: dU = [[2 da, db], [db, 2 dc]] U; U = T M: dT = dU M^T, dM = T^T dU.
    const double* U = P.U;
    double dU[6], dT[6], dM[9];
    for (int j = 0; j < 3; ++j) {
        dU[j] = 2 * da * U[j] + db * U[3 + j];
        dU[3 + j] = db * U[j] + 2 * dc * U[3 + j];
    }
    for (int r = 0; r < 2; ++r)
        for (int i = 0; i < 3; ++i)
            dT[3 * r + i] = dU[3 * r] * P.M[3 * i] + dU[3 * r + 1] * P.M[3 * i + 1] + dU[3 * r + 2] * P.M[3 * i + 2];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) dM[3 * i + j] = P.T[i] * dU[j] + P.T[3 + i] * dU[3 + j];
    // T = J V with rows J0 = (J00, 0, J02), J1 = (0, J11, J12)
    const double* V = cam.V;
    const double dJ00 = dT[0] * V[0] + dT[1] * V[1] + dT[2] * V[2];
    const double dJ02 = dT[0] * V[6] + dT[1] * V[7] + dT[2] * V[8];
    const double dJ11 = dT[3] * V[3] + dT[4] * V[4] + dT[5] * V[5];
    const double dJ12 = dT[3] * V[6] + dT[4] * V[7] + dT[5] * V[8];
    // J00 = fx / tz, J02 = -fx uxc / tz (= -fx tx_c / tz^2 with tx_c = tz uxc), means2d = f u + c.
    const double tz = P.tz_s;
    double d_tz = -(dJ00 * cam.fx + dJ11 * cam.fy) / (tz * tz);
    const double d_uxc = -dJ02 * cam.fx / tz, d_uyc = -dJ12 * cam.fy / tz;
    d_tz += (dJ02 * cam.fx * P.uxc + dJ12 * cam.fy * P.uyc) / (tz * tz);
    double d_ux = gm[0] * cam.fx, d_uy = gm[1] * cam.fy;
    if (P.ux >= -cam.lim_x && P.ux <= cam.lim_x) d_ux += d_uxc;
    if (P.uy >= -cam.lim_y && P.uy <= cam.lim_y) d_uy += d_uyc;
    // u = p / tz, p = V m + t
    const double dp[3] = {d_ux / tz, d_uy / tz, P.p[2] >= cam.near ? d_tz - (d_ux * P.ux + d_uy * P.uy) / tz : 0.0};
    for (int j = 0; j < 3; ++j) dm[j] = V[j] * dp[0] + V[3 + j] * dp[1] + V[6 + j] * dp[2];
    // M = R diag(s)
    double dR[9];
    for (int j = 0; j < 3; ++j) ds[j] = 0;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            ds[j] += dM[3 * i + j] * P.R[3 * i + j];
            dR[3 * i + j] = dM[3 * i + j] * s[j];
        }
    rotmat_backward(q, P.u, P.norm, dR, dq);
}

// Copies n values of a Gaussian's row into doubles.
template <typename T>
void load(const T* src, double* dst, int n) {
    for (int i = 0; i < n; ++i) dst[i] = static_cast<double>(src[i]);
}

// Basis functions of the real spherical harmonics up to k coefficients (1, 4, 9, 16) at direction d, in
// sh_to_rgb's order and sign convention, and their derivatives dB (3 per function, of the polynomials as written
// there: differentiated as they stand, without the unit-length constraint, as autograd does).
inline void sh_basis(int k, const double d[3], double B[16], double dB[16][3]) {
    const double C0 = 0.28209479177387814, C1 = 0.4886025119029199;
    const double C2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                          0.5462742152960396};
    const double C3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                          -0.4570457994644658, 1.445305721320277, -0.5900435899266435};
    const double x = d[0], y = d[1], z = d[2];
    const auto set = [&](int i, double b, double gx, double gy, double gz) {
        B[i] = b, dB[i][0] = gx, dB[i][1] = gy, dB[i][2] = gz;
    };
    set(0, C0, 0, 0, 0);
    if (k <= 1) return;
    set(1, -C1 * y, 0, -C1, 0);
    set(2, C1 * z, 0, 0, C1);
    set(3, -C1 * x, -C1, 0, 0);
    if (k <= 4) return;
    const double xx = x * x, yy = y * y, zz = z * z;
    set(4, C2[0] * x * y, C2[0] * y, C2[0] * x, 0);
    set(5, C2[1] * y * z, 0, C2[1] * z, C2[1] * y);
    set(6, C2[2] * (2 * zz - xx - yy), -2 * C2[2] * x, -2 * C2[2] * y, 4 * C2[2] * z);
    set(7, C2[3] * x * z, C2[3] * z, 0, C2[3] * x);
    set(8, C2[4] * (xx - yy), 2 * C2[4] * x, -2 * C2[4] * y, 0);
    if (k <= 9) return;
    set(9, C3[0] * y * (3 * xx - yy), C3[0] * 6 * x * y, C3[0] * (3 * xx - 3 * yy), 0);
    set(10, C3[1] * x * y * z, C3[1] * y * z, C3[1] * x * z, C3[1] * x * y);
    set(11, C3[2] * y * (4 * zz - xx - yy), C3[2] * -2 * x * y, C3[2] * (4 * zz - xx - 3 * yy), C3[2] * 8 * y * z);
    set(12, C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[3] * -6 * x * z, C3[3] * -6 * y * z, C3[3] * (6 * zz - 3 * xx - 3 * yy));
    set(13, C3[4] * x * (4 * zz - xx - yy), C3[4] * (4 * zz - 3 * xx - yy), C3[4] * -2 * x * y, C3[4] * 8 * x * z);
    set(14, C3[5] * z * (xx - yy), C3[5] * 2 * x * z, C3[5] * -2 * y * z, C3[5] * (xx - yy));
    set(15, C3[6] * x * (xx - 3 * yy), C3[6] * (3 * xx - 3 * yy), C3[6] * -6 * x * y, 0);
}

// The view of one Gaussian from the camera centre: offset, distance, unit direction (distance clamped at 1e-8).
struct View {
    double offset[3], dist, safe, dir[3];
};

// The view of the Gaussian at m from the camera centre pos.
inline View view_of(const double m[3], const double pos[3]) {
    View v;
    for (int i = 0; i < 3; ++i) v.offset[i] = m[i] - pos[i];
    v.dist = std::sqrt(v.offset[0] * v.offset[0] + v.offset[1] * v.offset[1] + v.offset[2] * v.offset[2]);
    v.safe = std::max(v.dist, kDirEps);
    for (int i = 0; i < 3; ++i) v.dir[i] = v.offset[i] / v.safe;
    return v;
}

// Column of the rotation matrix along the smallest scale (first one on ties, as argmin) and whether it is flipped
// to face the camera (shortest_axis_normals).
inline int normal_axis(const double s[3], const double R[9], const double dir[3], bool& flip) {
    int axis = 0;
    for (int j = 1; j < 3; ++j)
        if (s[j] < s[axis]) axis = j;
    flip = R[axis] * dir[0] + R[3 + axis] * dir[1] + R[6 + axis] * dir[2] > 0;
    return axis;
}

// The shape, layout and dtype checks shared by every entry point.
void check_gaussians(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats) {
    TORCH_CHECK(means.dim() == 2 && means.size(1) == 3 && scales.sizes() == means.sizes() && quats.dim() == 2 &&
                quats.size(0) == means.size(0) && quats.size(1) == 4, "native projection: means/scales (N,3), quats (N,4)");
    TORCH_CHECK(means.is_contiguous() && scales.is_contiguous() && quats.is_contiguous(),
                "native projection: contiguous inputs expected");
    TORCH_CHECK(scales.dtype() == means.dtype() && quats.dtype() == means.dtype(), "native projection: one dtype");
}

// Calls fn with a zero of t's dtype (float or double). Unlike AT_DISPATCH_FLOATING_TYPES, whose body is a macro
// argument, the lambda may hold OpenMP pragmas.
template <typename Fn>
void dispatch_float(const at::Tensor& t, Fn&& fn) {
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "native kernels: float32 or float64");
    if (t.scalar_type() == at::kDouble)
        fn(0.0);
    else
        fn(0.0f);
}

}  // namespace

// EWA projection for one camera: means2d (N,2), conics (N,3), depths (N), radii (N; 0 = culled), as `project` in
// gaussian_raster.py does from covariances(scales, quats).
std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                        const at::Tensor& viewmat, const at::Tensor& K, int64_t height, int64_t width,
                                        double near, double eps2d, int64_t threads) {
    check_gaussians(means, scales, quats);
    const Camera cam(viewmat, K, height, width, near, eps2d);
    const int64_t n = means.size(0);
    auto means2d = at::empty({n, 2}, means.options());
    auto conics = at::empty({n, 3}, means.options());
    auto depths = at::empty({n}, means.options());
    auto radii = at::empty({n}, means.options());
    dispatch_float(means, [&](auto zero) {
        using scalar_t = decltype(zero);
        const scalar_t *m = means.data_ptr<scalar_t>(), *s = scales.data_ptr<scalar_t>(), *q = quats.data_ptr<scalar_t>();
        scalar_t *m2 = means2d.data_ptr<scalar_t>(), *con = conics.data_ptr<scalar_t>();
        scalar_t *dep = depths.data_ptr<scalar_t>(), *rad = radii.data_ptr<scalar_t>();
        const scalar_t near_t = static_cast<scalar_t>(near), w_t = static_cast<scalar_t>(width),
                       h_t = static_cast<scalar_t>(height);
#pragma omp parallel for schedule(static) num_threads(threads_for(n, threads))
        for (int64_t g = 0; g < n; ++g) {
            double mg[3], sg[3], qg[4];
            load(m + 3 * g, mg, 3), load(s + 3 * g, sg, 3), load(q + 4 * g, qg, 4);
            const Projection P = project_one(cam, mg, sg, qg);
            const scalar_t mx = static_cast<scalar_t>(P.mx), my = static_cast<scalar_t>(P.my);
            const scalar_t r = static_cast<scalar_t>(P.radius), tz = static_cast<scalar_t>(P.p[2]);
            m2[2 * g] = mx, m2[2 * g + 1] = my;
            con[3 * g] = static_cast<scalar_t>(P.c / P.det);
            con[3 * g + 1] = static_cast<scalar_t>(-P.b / P.det);
            con[3 * g + 2] = static_cast<scalar_t>(P.a / P.det);
            dep[g] = tz;
            const bool visible = tz > near_t && mx + r > 0 && mx - r < w_t && my + r > 0 && my - r < h_t;
            rad[g] = visible ? r : scalar_t(0);
        }
    });
    return {means2d, conics, depths, radii};
}

// Gradients of a loss with dL/dmeans2d (N,2) and dL/dconics (N,3) with respect to means, scales and quats (the
// depths and radii carry none: they only sort and cull).
std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                         const at::Tensor& viewmat, const at::Tensor& K, int64_t height, int64_t width,
                                         const at::Tensor& grad_means2d, const at::Tensor& grad_conics, double near,
                                         double eps2d, int64_t threads) {
    check_gaussians(means, scales, quats);
    TORCH_CHECK(grad_means2d.is_contiguous() && grad_conics.is_contiguous() &&
                grad_means2d.dtype() == means.dtype() && grad_conics.dtype() == means.dtype(),
                "native projection: contiguous gradients in the inputs' dtype expected");
    const Camera cam(viewmat, K, height, width, near, eps2d);
    const int64_t n = means.size(0);
    auto d_means = at::empty_like(means), d_scales = at::empty_like(scales), d_quats = at::empty_like(quats);
    dispatch_float(means, [&](auto zero) {
        using scalar_t = decltype(zero);
        const scalar_t *m = means.data_ptr<scalar_t>(), *s = scales.data_ptr<scalar_t>(), *q = quats.data_ptr<scalar_t>();
        const scalar_t *gm = grad_means2d.data_ptr<scalar_t>(), *gc = grad_conics.data_ptr<scalar_t>();
        scalar_t *dm = d_means.data_ptr<scalar_t>(), *ds = d_scales.data_ptr<scalar_t>(), *dq = d_quats.data_ptr<scalar_t>();
#pragma omp parallel for schedule(static) num_threads(threads_for(n, threads))
        for (int64_t g = 0; g < n; ++g) {
            double mg[3], sg[3], qg[4], gmg[2], gcg[3], dmg[3], dsg[3], dqg[4];
            load(m + 3 * g, mg, 3), load(s + 3 * g, sg, 3), load(q + 4 * g, qg, 4);
            load(gm + 2 * g, gmg, 2), load(gc + 3 * g, gcg, 3);
            const Projection P = project_one(cam, mg, sg, qg);
            project_one_backward(cam, sg, qg, P, gmg, gcg, dmg, dsg, dqg);
            for (int i = 0; i < 3; ++i) dm[3 * g + i] = static_cast<scalar_t>(dmg[i]), ds[3 * g + i] = static_cast<scalar_t>(dsg[i]);
            for (int i = 0; i < 4; ++i) dq[4 * g + i] = static_cast<scalar_t>(dqg[i]);
        }
    });
    return {d_means, d_scales, d_quats};
}

// Per-Gaussian features seen from the camera centre `position` (3): rgb = max(SH(dir) + 0.5, 0) (3) and, with
// geometry, the distance (1) and the camera-facing normal (3), as _camera_features in gaussian_raster.py.
at::Tensor features_forward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                            const at::Tensor& sh, const at::Tensor& position, bool geometry, int64_t threads) {
    check_gaussians(means, scales, quats);
    const int64_t n = means.size(0), k = sh.size(1), nf = geometry ? 7 : 3;
    TORCH_CHECK(sh.dim() == 3 && sh.size(0) == n && sh.size(2) == 3 && (k == 1 || k == 4 || k == 9 || k == 16) &&
                sh.is_contiguous() && sh.dtype() == means.dtype(), "native features: contiguous sh (N, 1|4|9|16, 3)");
    const auto pos_t = position.to(at::kDouble).contiguous();
    const double* pos = pos_t.data_ptr<double>();
    auto out = at::empty({n, nf}, means.options());
    dispatch_float(means, [&](auto zero) {
        using scalar_t = decltype(zero);
        const scalar_t *m = means.data_ptr<scalar_t>(), *s = scales.data_ptr<scalar_t>(), *q = quats.data_ptr<scalar_t>();
        const scalar_t* c = sh.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
#pragma omp parallel for schedule(static) num_threads(threads_for(n, threads))
        for (int64_t g = 0; g < n; ++g) {
            double mg[3], B[16], dB[16][3];
            load(m + 3 * g, mg, 3);
            const View v = view_of(mg, pos);
            sh_basis(static_cast<int>(k), v.dir, B, dB);
            const scalar_t* cg = c + g * k * 3;
            for (int ch = 0; ch < 3; ++ch) {
                double sum = 0;
                for (int64_t i = 0; i < k; ++i) sum += B[i] * cg[3 * i + ch];
                o[nf * g + ch] = static_cast<scalar_t>(std::max(sum + 0.5, 0.0));
            }
            if (!geometry) continue;
            double sg[3], qg[4], u[4], R[9];
            load(s + 3 * g, sg, 3), load(q + 4 * g, qg, 4);
            normalise(qg, u);
            rotmat(u, R);
            bool flip;
            const int axis = normal_axis(sg, R, v.dir, flip);
            o[nf * g + 3] = static_cast<scalar_t>(v.dist);
            for (int i = 0; i < 3; ++i) o[nf * g + 4 + i] = static_cast<scalar_t>(flip ? -R[3 * i + axis] : R[3 * i + axis]);
        }
    });
    return out;
}

// Gradients of a loss with dL/dfeatures (N, 3 or 7) with respect to means, quats and sh (the scales pick the
// normal's axis only: no gradient, as on the PyTorch path).
std::vector<at::Tensor> features_backward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                          const at::Tensor& sh, const at::Tensor& position, const at::Tensor& grad_out,
                                          int64_t threads) {
    check_gaussians(means, scales, quats);
    const int64_t n = means.size(0), k = sh.size(1), nf = grad_out.size(1);
    TORCH_CHECK(grad_out.is_contiguous() && grad_out.dtype() == means.dtype() && (nf == 3 || nf == 7),
                "native features: contiguous gradient (N, 3|7) in the inputs' dtype expected");
    const auto pos_t = position.to(at::kDouble).contiguous();
    const double* pos = pos_t.data_ptr<double>();
    auto d_means = at::empty_like(means), d_quats = at::zeros_like(quats), d_sh = at::empty_like(sh);
    dispatch_float(means, [&](auto zero) {
        using scalar_t = decltype(zero);
        const scalar_t *m = means.data_ptr<scalar_t>(), *s = scales.data_ptr<scalar_t>(), *q = quats.data_ptr<scalar_t>();
        const scalar_t *c = sh.data_ptr<scalar_t>(), *go = grad_out.data_ptr<scalar_t>();
        scalar_t *dm = d_means.data_ptr<scalar_t>(), *dq = d_quats.data_ptr<scalar_t>(), *dc = d_sh.data_ptr<scalar_t>();
#pragma omp parallel for schedule(static) num_threads(threads_for(n, threads))
        for (int64_t g = 0; g < n; ++g) {
            double mg[3], B[16], dB[16][3], d_dir[3] = {0, 0, 0}, d_off[3] = {0, 0, 0};
            load(m + 3 * g, mg, 3);
            const View v = view_of(mg, pos);
            sh_basis(static_cast<int>(k), v.dir, B, dB);
            const scalar_t* cg = c + g * k * 3;
            const scalar_t* gg = go + nf * g;
            for (int ch = 0; ch < 3; ++ch) {
                double sum = 0;
                for (int64_t i = 0; i < k; ++i) sum += B[i] * cg[3 * i + ch];
                const double d_rgb = sum + 0.5 >= 0.0 ? static_cast<double>(gg[ch]) : 0.0;  // clamp_min(0)
                for (int64_t i = 0; i < k; ++i) {
                    dc[g * k * 3 + 3 * i + ch] = static_cast<scalar_t>(B[i] * d_rgb);
                    for (int a = 0; a < 3; ++a) d_dir[a] += dB[i][a] * cg[3 * i + ch] * d_rgb;
                }
            }
            // dir = offset / max(dist, 1e-8); dist = |offset|
            const double along = d_dir[0] * v.offset[0] + d_dir[1] * v.offset[1] + d_dir[2] * v.offset[2];
            double d_dist = v.dist >= kDirEps ? -along / (v.safe * v.safe) : 0.0;
            for (int a = 0; a < 3; ++a) d_off[a] = d_dir[a] / v.safe;
            if (nf == 7) {
                d_dist += gg[3];
                double sg[3], qg[4], u[4], R[9], dR[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0}, dqg[4];
                load(s + 3 * g, sg, 3), load(q + 4 * g, qg, 4);
                const double norm = normalise(qg, u);
                rotmat(u, R);
                bool flip;
                const int axis = normal_axis(sg, R, v.dir, flip);
                for (int i = 0; i < 3; ++i) dR[3 * i + axis] = flip ? -gg[4 + i] : gg[4 + i];
                rotmat_backward(qg, u, norm, dR, dqg);
                for (int i = 0; i < 4; ++i) dq[4 * g + i] = static_cast<scalar_t>(dqg[i]);
            }
            if (v.dist > 0)
                for (int a = 0; a < 3; ++a) d_off[a] += d_dist * v.offset[a] / v.dist;
            for (int a = 0; a < 3; ++a) dm[3 * g + a] = static_cast<scalar_t>(d_off[a]);
        }
    });
    return {d_means, d_quats, d_sh};
}
