/* h5io.c - one-dimensional HDF5 datasets; see h5io.h. */
#include "distill/h5io.h"

int h5_write_1d(hid_t f, const char *name, hid_t type, hsize_t n, const void *data) {
    hsize_t dims[1] = {n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (sp < 0) return -1;
    /* no modification times in the file: the same content is the same bytes */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) {
        if (dcpl >= 0) H5Pclose(dcpl);
        H5Sclose(sp);
        return -1;
    }
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    int rc = d >= 0 && (n == 0 || H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0) ? 0 : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

hid_t h5_create_file(const char *path) {
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0) return -1;
    hid_t f = H5Pset_obj_track_times(fcpl, 0) < 0 ? -1 : H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    return f;
}

int h5_read_1d(hid_t f, const char *name, hid_t type, hsize_t n, void *data, const char *path, const char *what,
               slmc_err *err) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return slmc_fail(err, path, "has no dataset '%s': not %s", name, what);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[1] = {0};
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank == 1) H5Sget_simple_extent_dims(sp, dims, NULL);
    int rc = 0;
    if (rank != 1 || dims[0] != n)
        rc = slmc_fail(err, path, "dataset '%s' holds %llu values, expected %llu", name, (unsigned long long)dims[0],
                       (unsigned long long)n);
    else if (n > 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = slmc_fail(err, path, "cannot read dataset '%s'", name);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return rc;
}
