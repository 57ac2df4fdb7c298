"""Rewrite a keras_stiffness run file with gzip compression added to every chunked dataset.

Used on the run files of this folder (see README.md) to keep the folder small: ``kstiff train`` writes
its run files uncompressed (about 1 MB for a 40-epoch digits run), gzip makes them about 3 times smaller.
The copy has the same datasets, values, dtypes, shapes, chunks, fill values, Fletcher32 checksums,
attributes and dimension scales; only each chunked dataset's filter pipeline gains gzip (level 6, before
the checksum). HDF5 decompresses on read, so every reader (open_run, h5py, xarray) reads it unchanged.
The script checks the copy against the original (values, attributes, layout, scales) before it exits.

    .venv/bin/python saved_runs/repack.py SRC.h5 DST.h5 && mv DST.h5 SRC.h5
"""
import sys
import h5py
import numpy as np

SKIP_ATTRS = {"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates"}


def copy_attrs(src, dst, skip=()):
    for name in src.attrs:
        if name in skip:
            continue
        aid = src.attrs.get_id(name)
        dst.attrs.create(name, data=src.attrs[name], dtype=aid.dtype)


def repack(src_path, dst_path):
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "w", libver=("v110", "v110")) as dst:
        copy_attrs(src, dst)
        scales = {}
        dims = {}
        for name, ds in src.items():
            assert isinstance(ds, h5py.Dataset), name
            kw = dict(shape=ds.shape, dtype=ds.dtype)
            if ds.chunks:
                kw.update(maxshape=ds.maxshape, chunks=ds.chunks, fletcher32=ds.fletcher32, compression="gzip", compression_opts=6)
                if ds.fillvalue is not None:
                    kw["fillvalue"] = ds.fillvalue
            new = dst.create_dataset(name, **kw)
            if ds.size:
                new[...] = ds[...]
            copy_attrs(ds, new, SKIP_ATTRS)
            if ds.is_scale:
                scales[name] = (new, h5py.h5ds.get_scale_name(ds.id).decode())
            dims[name] = [[s.name.lstrip("/") for s in d.values()] for d in ds.dims]
        for name, (ds, sname) in scales.items():
            ds.make_scale(sname)
        for name, per_dim in dims.items():
            for i, attached in enumerate(per_dim):
                for s in attached:
                    if s == name and name in scales and i == 0 and name != "measurement":
                        continue
                    dst[name].dims[i].attach_scale(dst[s])


def check(a, b):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa) == set(fb)
        for k in fa.attrs:
            assert np.array_equal(np.asarray(fa.attrs[k]), np.asarray(fb.attrs[k])), k
        assert set(fa.attrs) == set(fb.attrs)
        for name in fa:
            x, y = fa[name], fb[name]
            assert x.shape == y.shape and x.dtype == y.dtype and x.chunks == y.chunks and x.fletcher32 == y.fletcher32, name
            vx, vy = x[...], y[...]
            if vx.dtype.kind == "f":
                assert np.array_equal(vx, vy, equal_nan=True), name
            else:
                assert np.array_equal(vx, vy), name
            assert [[s.name for s in d.values()] for d in x.dims] == [[s.name for s in d.values()] for d in y.dims], name
            assert {k for k in x.attrs} == {k for k in y.attrs}, (name, set(x.attrs), set(y.attrs))


if __name__ == "__main__":
    repack(sys.argv[1], sys.argv[2])
    check(sys.argv[1], sys.argv[2])
    print("ok", sys.argv[2])
