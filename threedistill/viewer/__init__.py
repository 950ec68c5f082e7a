"""The `t3d view` page: a run as one self-contained HTML file (`page`), with its prebuilt script in `assets/`."""
