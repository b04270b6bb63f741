// Lab 4: your kernel. tile_sum — workgroup g of 256 work-items writes to out[g] the sum of
// in[g * TILE .. g * TILE + TILE - 1] (elements at or past n count as 0).
//
// Stage the whole tile in LDS (the __local array below), then reduce it in LDS with
// barriers between the steps. Keep the signature: the check and starter.py launch it.

#define TILE 2048

__kernel void tile_sum(__global const float *in, __global float *out, uint n)
{
    __local float tile[TILE];
    uint lid = get_local_id(0);

    // TODO 1: copy this workgroup's TILE floats of `in` into `tile` (8 per work-item;
    //         neighbouring work-items should read neighbouring floats), then barrier().
    // TODO 2: each work-item sums 8 floats of the tile; store the 256 partial sums into
    //         tile[0..255] (barrier before overwriting what others still read).
    // TODO 3: a tree over the partial sums: stride = get_local_size(0) / 2, halving, with a
    //         barrier after each step; work-item 0 writes tile[0] to out[get_group_id(0)].
    tile[lid] = 0.0f;
    if (lid == 0)
        out[get_group_id(0)] = tile[0];
}
