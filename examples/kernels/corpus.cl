// The compiled-kernel corpus: each kernel is run by tests/e2e/test_compiled_kernels.py and
// compared with numpy on gfx900 and gfx90a; bench/isa_speed.py times vector_add and matmul.
// Build: clang-15 -x cl -Xclang -finclude-default-header -target amdgcn-amd-amdhsa
//   -mcpu=gfx900 --rocm-device-lib-path=DIR -c corpus.cl && ld.lld-15 -shared corpus.o
__kernel void vector_add(__global const float *a, __global const float *b,
                         __global float *c, uint n) {
  size_t i = get_global_id(0);
  if (i < n) c[i] = a[i] + b[i];
}

__kernel void saxpy(float alpha, __global const float *x, __global float *y, int n) {
  size_t i = get_global_id(0);
  if (i < n) y[i] = alpha * x[i] + y[i];
}

__kernel void square(__global const int *in, __global int *out) {
  size_t i = get_global_id(0);
  out[i] = in[i] * in[i];
}

__kernel void stencil(__global const float *in, __global float *out, int w, int h) {
  int x = get_global_id(0), y = get_global_id(1);
  if (x >= w || y >= h) return;
  int i = y * w + x;
  if (x == 0 || y == 0 || x == w - 1 || y == h - 1) { out[i] = in[i]; return; }
  out[i] = 0.25f * (in[i - w] + in[i + w] + in[i - 1] + in[i + 1]);
}

__kernel void reduce(__global const int *in, __global int *out) {
  __local int s[256];
  int l = get_local_id(0);
  s[l] = in[get_global_id(0)];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int k = get_local_size(0) / 2; k > 0; k >>= 1) {
    if (l < k) s[l] += s[l + k];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (l == 0) out[get_group_id(0)] = s[0];
}

#define T 16
__kernel void matmul(__global const float *A, __global const float *B, __global float *C,
                     int n) {
  __local float a[T][T], b[T][T];
  int tx = get_local_id(0), ty = get_local_id(1);
  int col = get_global_id(0), row = get_global_id(1);
  float acc = 0.0f;
  for (int t = 0; t < n / T; t++) {
    a[ty][tx] = A[row * n + t * T + tx];
    b[ty][tx] = B[(t * T + ty) * n + col];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < T; k++) acc += a[ty][k] * b[k][tx];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  C[row * n + col] = acc;
}

__kernel void histogram(__global const uint *data, __global uint *bins, uint nbins) {
  atomic_add(&bins[data[get_global_id(0)] % nbins], 1u);
}

__kernel void scan(__global const int *in, __global int *out) {
  __local int s[256];
  int l = get_local_id(0);
  int g = get_global_id(0);
  s[l] = in[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int off = 1; off < get_local_size(0); off <<= 1) {
    int v = l >= off ? s[l - off] : 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    s[l] += v;
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  out[g] = s[l];
}

__kernel void collatz(__global const uint *in, __global uint *steps) {
  uint x = in[get_global_id(0)];
  uint n = 0;
  while (x > 1) { x = (x & 1) ? 3 * x + 1 : x / 2; n++; }
  steps[get_global_id(0)] = n;
}

__kernel void divergent(__global int *out) {
  int g = get_global_id(0);
  int acc = 0;
  int trips = get_group_id(0) * 3 + 1;  /* uniform in a workgroup: a scalar loop */
  for (int i = 0; i < trips; i++) acc += i ^ g;
  if (g & 1) acc = -acc; else acc *= 2;
  out[g] = acc;
}

__kernel void divmod(__global const int *a, __global const int *b, __global int *q,
                     __global int *r, __global uint *uq) {
  size_t i = get_global_id(0);
  q[i] = a[i] / b[i];
  r[i] = a[i] % b[i];
  uq[i] = (uint)a[i] / (uint)b[i];
}

__kernel void int64(__global const long *a, __global const long *b, __global long *out) {
  size_t i = get_global_id(0);
  long x = a[i], y = b[i];
  out[4 * i] = x * y + (x >> 3);
  out[4 * i + 1] = x / y;
  out[4 * i + 2] = (long)((ulong)x >> 7) ^ (y << 5);
  out[4 * i + 3] = x % y;
}

__kernel void mathf(__global const float *x, __global float *s, __global float *e,
                    __global float *sn) {
  size_t i = get_global_id(0);
  s[i] = sqrt(x[i]);
  e[i] = exp(x[i]);
  sn[i] = sin(x[i]);
}

__kernel void ids(__global uint *out) {
  size_t i = get_global_id(0) +
             get_global_size(0) * (get_global_id(1) + get_global_size(1) * get_global_id(2));
  out[4 * i] = get_local_id(0) | get_local_id(1) << 8 | get_local_id(2) << 16;
  out[4 * i + 1] = get_group_id(0) | get_group_id(1) << 8 | get_group_id(2) << 16;
  out[4 * i + 2] = get_local_size(0) | get_local_size(1) << 8 | get_local_size(2) << 16;
  out[4 * i + 3] = get_global_size(0) | get_global_size(1) << 8 | get_global_size(2) << 16;
}

__kernel void uniform_load(__constant int *p, __global int *out) {
  out[get_global_id(0)] = p[get_group_id(0)] + 1;  /* one scalar load per workgroup */
}

__attribute__((noinline)) int helper(int x, int y) {
  int t[4];
  for (int i = 0; i < 4; i++) t[i] = x * i + y;
  return t[x & 3] + t[(y + 1) & 3];
}

__kernel void calls(__global const int *in, __global int *out) {
  int g = get_global_id(0);
  out[g] = helper(in[g], g) + helper(g, 3);  /* s_getpc, s_swappc, s_setpc */
}

#pragma OPENCL FP_CONTRACT OFF
__kernel void dmath(__global const double *x, __global const double *y, __global double *out) {
  size_t i = get_global_id(0);
  out[i] = x[i] * y[i] + x[i] / y[i] - sqrt(x[i]);
}
