// Lab 4 reference kernel: tile_sum — each workgroup sums one tile of TILE floats.
//
// The whole tile is staged in LDS first (8 KiB per workgroup), then each work-item sums
// TILE / 256 neighbours and a tree over the workgroup's partial sums finishes the job.
// Staging the tile costs LDS, and LDS is what limits how many workgroups a CU holds.

#define TILE 2048

__kernel void tile_sum(__global const float *in, __global float *out, uint n)
{
    __local float tile[TILE];
    uint lid = get_local_id(0);
    uint wg = get_local_size(0);  // from the hidden arguments (hidden_group_size_x)
    uint per_item = TILE / 256;   // the lab launches workgroups of 256 work-items
    uint base = get_group_id(0) * TILE;

    // 1. Stage: coalesced loads (neighbouring work-items read neighbouring floats).
    for (uint k = 0; k < per_item; ++k) {
        uint i = base + k * 256 + lid;
        tile[k * 256 + lid] = i < n ? in[i] : 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    // 2. Each work-item sums its own run of per_item floats of the tile.
    float s = 0.0f;
    for (uint k = 0; k < per_item; ++k)
        s += tile[lid * per_item + k];
    barrier(CLK_LOCAL_MEM_FENCE);  // everyone has read the tile before it is overwritten
    tile[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);

    // 3. Tree over the workgroup's partial sums, halving each step.
    for (uint stride = wg / 2; stride > 0; stride >>= 1) {
        if (lid < stride)
            tile[lid] += tile[lid + stride];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[get_group_id(0)] = tile[0];
}
