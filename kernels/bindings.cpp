// Python bindings of threedistill's native CPU kernels (built on first use by threedistill/native.py).
#include <torch/extension.h>

#include <vector>

std::vector<at::Tensor> raster_forward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                                       const at::Tensor& features, const at::Tensor& tile_offsets,
                                       const at::Tensor& gauss_ids, int64_t height, int64_t width, int64_t tile,
                                       double alpha_min, double alpha_max, double t_min, int64_t threads);
std::vector<at::Tensor> raster_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                                        const at::Tensor& features, const at::Tensor& tile_offsets,
                                        const at::Tensor& gauss_ids, const at::Tensor& final_t, const at::Tensor& last,
                                        const at::Tensor& grad_image, const at::Tensor& grad_alpha, int64_t tile,
                                        double alpha_min, double alpha_max, int64_t threads);
std::vector<at::Tensor> bin_gaussians(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                                      int64_t tiles_x, int64_t tiles_y, int64_t tile);
std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                        const at::Tensor& viewmat, const at::Tensor& K, int64_t height, int64_t width,
                                        double near, double eps2d, int64_t threads);
std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                         const at::Tensor& viewmat, const at::Tensor& K, int64_t height, int64_t width,
                                         const at::Tensor& grad_means2d, const at::Tensor& grad_conics, double near,
                                         double eps2d, int64_t threads);
at::Tensor features_forward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                            const at::Tensor& sh, const at::Tensor& position, bool geometry, int64_t threads);
std::vector<at::Tensor> features_backward(const at::Tensor& means, const at::Tensor& scales, const at::Tensor& quats,
                                          const at::Tensor& sh, const at::Tensor& position, const at::Tensor& grad_out,
                                          int64_t threads);
at::Tensor hash_grid_forward(const at::Tensor& points, const at::Tensor& table, const std::vector<int64_t>& resolutions,
                             const std::vector<bool>& dense, const std::vector<int64_t>& offsets, int64_t table_size, int64_t threads);
at::Tensor hash_grid_backward(const at::Tensor& points, const at::Tensor& grad_out, int64_t rows,
                              const std::vector<int64_t>& resolutions, const std::vector<bool>& dense,
                              const std::vector<int64_t>& offsets, int64_t table_size, int64_t threads);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bin_gaussians", &bin_gaussians, "tiles touched by each Gaussian, front to back per tile");
    m.def("raster_forward", &raster_forward, "alpha compositing of binned 2D Gaussians (forward)");
    m.def("raster_backward", &raster_backward, "alpha compositing of binned 2D Gaussians (backward)");
    m.def("project_forward", &project_forward, "EWA projection of 3D Gaussians for one camera (forward)");
    m.def("project_backward", &project_backward, "EWA projection of 3D Gaussians for one camera (backward)");
    m.def("features_forward", &features_forward, "per-Gaussian colour (SH), distance and normal from a camera (forward)");
    m.def("features_backward", &features_backward, "per-Gaussian colour (SH), distance and normal from a camera (backward)");
    m.def("hash_grid_forward", &hash_grid_forward, "multiresolution hash-grid encoding (forward)");
    m.def("hash_grid_backward", &hash_grid_backward, "multiresolution hash-grid encoding (table gradient)");
}
