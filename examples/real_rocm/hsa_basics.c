/*
 * hsa_basics: the HSA runtime's basic calls, written against hsa.h, for the real ROCm runtime
 * (libhsa-runtime64 + libhsakmt) running on the emulated GPU:
 *
 *   gcc hsa_basics.c -o hsa_basics -lhsa-runtime64
 *   hsaemu exec --preset gfx900 -- ./hsa_basics                      # init, agents, memory, queue
 *   hsaemu exec --preset gfx900 -- ./hsa_basics --dispatch saxpy.co  # + a saxpy kernel
 *   hsaemu exec --preset gfx900 -- ./hsa_basics --copy               # + SDMA copies
 *
 * Every call prints one line "ok <call>" or "FAIL <call>: <status name>"; the exit status is 0
 * only if every call succeeded and every result was right.
 */
#include <hsa/hsa.h>
#include <hsa/hsa_ext_amd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static int check(hsa_status_t s, const char *what)
{
	if (s == HSA_STATUS_SUCCESS) {
		printf("ok %s\n", what);
		fflush(stdout);
		return 1;
	}
	const char *msg = NULL;
	hsa_status_string(s, &msg);
	printf("FAIL %s: status 0x%x %s\n", what, (unsigned)s, msg ? msg : "");
	fflush(stdout);
	failures++;
	return 0;
}

#define CHECK(call)                     \
	do {                            \
		if (!check((call), #call)) \
			goto out;       \
	} while (0)

struct agents {
	hsa_agent_t cpu, gpu;
	int have_cpu, have_gpu;
};

static hsa_status_t find_agents(hsa_agent_t agent, void *data)
{
	struct agents *a = data;
	hsa_device_type_t type;
	hsa_status_t s = hsa_agent_get_info(agent, HSA_AGENT_INFO_DEVICE, &type);
	if (s != HSA_STATUS_SUCCESS)
		return s;
	if (type == HSA_DEVICE_TYPE_CPU && !a->have_cpu) {
		a->cpu = agent;
		a->have_cpu = 1;
	} else if (type == HSA_DEVICE_TYPE_GPU && !a->have_gpu) {
		a->gpu = agent;
		a->have_gpu = 1;
	}
	return HSA_STATUS_SUCCESS;
}

struct pools {
	hsa_amd_memory_pool_t coarse, fine, kernarg;
	int have_coarse, have_fine, have_kernarg;
};

static hsa_status_t find_pools(hsa_amd_memory_pool_t pool, void *data)
{
	struct pools *p = data;
	hsa_amd_segment_t seg;
	uint32_t flags = 0;
	bool alloc = false;
	hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_SEGMENT, &seg);
	if (seg != HSA_AMD_SEGMENT_GLOBAL)
		return HSA_STATUS_SUCCESS;
	hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED, &alloc);
	if (!alloc)
		return HSA_STATUS_SUCCESS;
	hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &flags);
	if ((flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT) && !p->have_kernarg) {
		p->kernarg = pool;
		p->have_kernarg = 1;
	}
	if ((flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED) && !p->have_fine) {
		p->fine = pool;
		p->have_fine = 1;
	}
	if ((flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED) && !p->have_coarse) {
		p->coarse = pool;
		p->have_coarse = 1;
	}
	return HSA_STATUS_SUCCESS;
}

static void *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = n > 0 ? malloc((size_t)n) : NULL;
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = (size_t)n;
	return buf;
}

/* saxpy (examples/kernels/saxpy.cl): y = a * x + y over n floats, one AQL dispatch. */
static int dispatch_saxpy(const char *path, hsa_agent_t gpu, hsa_queue_t *queue,
			  struct pools *cpu_pools)
{
	enum { N = 1000 };
	const float a = 2.0f;
	size_t size = 0;
	void *blob = read_file(path, &size);
	hsa_code_object_reader_t reader;
	hsa_executable_t exe;
	hsa_executable_symbol_t sym;
	uint64_t kobj = 0;
	uint32_t kernarg_size = 0, group = 0, priv = 0;
	float *x = NULL, *y = NULL;
	void *kernarg = NULL;
	hsa_signal_t done = {0};
	int ok = 0;

	if (!blob) {
		printf("FAIL read %s\n", path);
		failures++;
		return 0;
	}
	CHECK(hsa_code_object_reader_create_from_memory(blob, size, &reader));
	CHECK(hsa_executable_create_alt(HSA_PROFILE_FULL, HSA_DEFAULT_FLOAT_ROUNDING_MODE_DEFAULT,
					NULL, &exe));
	CHECK(hsa_executable_load_agent_code_object(exe, gpu, reader, NULL, NULL));
	CHECK(hsa_executable_freeze(exe, NULL));
	CHECK(hsa_executable_get_symbol_by_name(exe, "saxpy.kd", &gpu, &sym));
	CHECK(hsa_executable_symbol_get_info(sym, HSA_EXECUTABLE_SYMBOL_INFO_KERNEL_OBJECT, &kobj));
	CHECK(hsa_executable_symbol_get_info(
		sym, HSA_EXECUTABLE_SYMBOL_INFO_KERNEL_KERNARG_SEGMENT_SIZE, &kernarg_size));
	CHECK(hsa_executable_symbol_get_info(
		sym, HSA_EXECUTABLE_SYMBOL_INFO_KERNEL_GROUP_SEGMENT_SIZE, &group));
	CHECK(hsa_executable_symbol_get_info(
		sym, HSA_EXECUTABLE_SYMBOL_INFO_KERNEL_PRIVATE_SEGMENT_SIZE, &priv));

	CHECK(hsa_amd_memory_pool_allocate(cpu_pools->fine, N * sizeof(float), 0, (void **)&x));
	CHECK(hsa_amd_memory_pool_allocate(cpu_pools->fine, N * sizeof(float), 0, (void **)&y));
	CHECK(hsa_amd_agents_allow_access(1, &gpu, NULL, x));
	CHECK(hsa_amd_agents_allow_access(1, &gpu, NULL, y));
	for (int i = 0; i < N; i++) {
		x[i] = (float)i;
		y[i] = 1.0f;
	}
	CHECK(hsa_amd_memory_pool_allocate(cpu_pools->kernarg, kernarg_size < 64 ? 64 : kernarg_size,
					   0, &kernarg));
	CHECK(hsa_amd_agents_allow_access(1, &gpu, NULL, kernarg));
	memset(kernarg, 0, kernarg_size);
	struct {
		float *y;
		const float *x;
		float a;
		uint32_t n;
	} args = {y, x, a, N};
	memcpy(kernarg, &args, sizeof(args));
	CHECK(hsa_signal_create(1, 0, NULL, &done));

	uint64_t index = hsa_queue_add_write_index_relaxed(queue, 1);
	hsa_kernel_dispatch_packet_t *pkt =
		(hsa_kernel_dispatch_packet_t *)queue->base_address + (index % queue->size);
	memset((char *)pkt + 4, 0, sizeof(*pkt) - 4);
	pkt->setup = 1 << HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS;
	pkt->workgroup_size_x = 64;
	pkt->workgroup_size_y = 1;
	pkt->workgroup_size_z = 1;
	pkt->grid_size_x = N;
	pkt->grid_size_y = 1;
	pkt->grid_size_z = 1;
	pkt->private_segment_size = priv;
	pkt->group_segment_size = group;
	pkt->kernel_object = kobj;
	pkt->kernarg_address = kernarg;
	pkt->completion_signal = done;
	uint16_t header = (HSA_PACKET_TYPE_KERNEL_DISPATCH << HSA_PACKET_HEADER_TYPE) |
			  (1 << HSA_PACKET_HEADER_BARRIER) |
			  (HSA_FENCE_SCOPE_SYSTEM << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE) |
			  (HSA_FENCE_SCOPE_SYSTEM << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE);
	__atomic_store_n((uint32_t *)pkt, header | ((uint32_t)pkt->setup << 16), __ATOMIC_RELEASE);
	hsa_signal_store_screlease(queue->doorbell_signal, (hsa_signal_value_t)index);
	printf("ok dispatch written at index %" PRIu64 ", doorbell rung\n", index);

	hsa_signal_value_t v = hsa_signal_wait_scacquire(done, HSA_SIGNAL_CONDITION_LT, 1,
							 UINT64_MAX, HSA_WAIT_STATE_BLOCKED);
	if (v != 0) {
		printf("FAIL completion signal is %" PRId64 ", expected 0\n", (int64_t)v);
		failures++;
		goto out;
	}
	int bad = 0;
	for (int i = 0; i < N; i++)
		if (y[i] != a * (float)i + 1.0f)
			bad++;
	if (bad) {
		printf("FAIL saxpy: %d of %d results wrong (y[10] = %g, expected %g)\n", bad, N,
		       (double)y[10], (double)(a * 10 + 1));
		failures++;
		goto out;
	}
	printf("ok saxpy results: y[i] = 2 * i + 1 for all %d elements\n", N);
	CHECK(hsa_signal_destroy(done));
	CHECK(hsa_amd_memory_pool_free(kernarg));
	CHECK(hsa_amd_memory_pool_free(x));
	CHECK(hsa_amd_memory_pool_free(y));
	CHECK(hsa_executable_destroy(exe));
	CHECK(hsa_code_object_reader_destroy(reader));
	ok = 1;
out:
	free(blob);
	return ok;
}

/* hsa_amd_memory_async_copy system -> VRAM -> system through the runtime's copy engines. */
static int async_copies(hsa_agent_t cpu, hsa_agent_t gpu, struct pools *cpu_pools,
			struct pools *gpu_pools)
{
	enum { BYTES = 1 << 20 };
	uint8_t *src = NULL, *dst = NULL;
	void *vram = NULL;
	hsa_signal_t sig = {0};
	int ok = 0;

	CHECK(hsa_amd_memory_pool_allocate(cpu_pools->fine, BYTES, 0, (void **)&src));
	CHECK(hsa_amd_memory_pool_allocate(cpu_pools->fine, BYTES, 0, (void **)&dst));
	CHECK(hsa_amd_memory_pool_allocate(gpu_pools->coarse, BYTES, 0, &vram));
	CHECK(hsa_amd_agents_allow_access(1, &gpu, NULL, src));
	CHECK(hsa_amd_agents_allow_access(1, &gpu, NULL, dst));
	for (int i = 0; i < BYTES; i++) {
		src[i] = (uint8_t)(i * 7 + 3);
		dst[i] = 0;
	}
	CHECK(hsa_signal_create(1, 0, NULL, &sig));
	CHECK(hsa_amd_memory_async_copy(vram, gpu, src, cpu, BYTES, 0, NULL, sig));
	if (hsa_signal_wait_scacquire(sig, HSA_SIGNAL_CONDITION_LT, 1, UINT64_MAX,
				      HSA_WAIT_STATE_BLOCKED) != 0) {
		printf("FAIL system -> VRAM copy did not complete\n");
		failures++;
		goto out;
	}
	hsa_signal_store_relaxed(sig, 1);
	CHECK(hsa_amd_memory_async_copy(dst, cpu, vram, gpu, BYTES, 0, NULL, sig));
	if (hsa_signal_wait_scacquire(sig, HSA_SIGNAL_CONDITION_LT, 1, UINT64_MAX,
				      HSA_WAIT_STATE_BLOCKED) != 0) {
		printf("FAIL VRAM -> system copy did not complete\n");
		failures++;
		goto out;
	}
	if (memcmp(src, dst, BYTES)) {
		printf("FAIL copied bytes differ from the source\n");
		failures++;
		goto out;
	}
	printf("ok %d bytes copied system -> VRAM -> system\n", BYTES);
	CHECK(hsa_signal_destroy(sig));
	CHECK(hsa_amd_memory_pool_free(src));
	CHECK(hsa_amd_memory_pool_free(dst));
	CHECK(hsa_amd_memory_pool_free(vram));
	ok = 1;
out:
	return ok;
}

int main(int argc, char **argv)
{
	const char *code_object = NULL;
	int copy = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dispatch") && i + 1 < argc)
			code_object = argv[++i];
		else if (!strcmp(argv[i], "--copy"))
			copy = 1;
		else {
			fprintf(stderr, "usage: %s [--dispatch CODE_OBJECT] [--copy]\n", argv[0]);
			return 2;
		}
	}
	struct agents ag = {0};
	struct pools cpu_pools = {0}, gpu_pools = {0};
	void *vram = NULL, *sys = NULL;
	hsa_signal_t sig = {0};
	hsa_queue_t *queue = NULL;
	char name[64] = {0};
	uint32_t cus = 0, wave = 0, qmax = 0;

	CHECK(hsa_init());
	CHECK(hsa_iterate_agents(find_agents, &ag));
	if (!ag.have_cpu || !ag.have_gpu) {
		printf("FAIL agents: cpu %d gpu %d\n", ag.have_cpu, ag.have_gpu);
		failures++;
		goto out;
	}
	CHECK(hsa_agent_get_info(ag.gpu, HSA_AGENT_INFO_NAME, name));
	CHECK(hsa_agent_get_info(ag.gpu, (hsa_agent_info_t)HSA_AMD_AGENT_INFO_COMPUTE_UNIT_COUNT,
				 &cus));
	CHECK(hsa_agent_get_info(ag.gpu, HSA_AGENT_INFO_WAVEFRONT_SIZE, &wave));
	CHECK(hsa_agent_get_info(ag.gpu, HSA_AGENT_INFO_QUEUE_MAX_SIZE, &qmax));
	printf("gpu agent %s: %u compute units, wavefront %u, queues up to %u packets\n", name, cus,
	       wave, qmax);

	CHECK(hsa_amd_agent_iterate_memory_pools(ag.cpu, find_pools, &cpu_pools));
	CHECK(hsa_amd_agent_iterate_memory_pools(ag.gpu, find_pools, &gpu_pools));
	if (!cpu_pools.have_fine || !cpu_pools.have_kernarg || !gpu_pools.have_coarse) {
		printf("FAIL pools: cpu fine %d kernarg %d, gpu coarse %d\n", cpu_pools.have_fine,
		       cpu_pools.have_kernarg, gpu_pools.have_coarse);
		failures++;
		goto out;
	}
	CHECK(hsa_amd_memory_pool_allocate(gpu_pools.coarse, 1 << 20, 0, &vram));
	CHECK(hsa_amd_memory_pool_allocate(cpu_pools.fine, 4096, 0, &sys));
	CHECK(hsa_amd_agents_allow_access(1, &ag.gpu, NULL, sys));
	memset(sys, 0x5a, 4096);
	if (((uint8_t *)sys)[4095] != 0x5a) {
		printf("FAIL system memory write/read\n");
		failures++;
	}

	CHECK(hsa_signal_create(7, 0, NULL, &sig));
	hsa_signal_subtract_screlease(sig, 2);
	hsa_signal_value_t v = hsa_signal_wait_scacquire(sig, HSA_SIGNAL_CONDITION_EQ, 5, 1000000,
							 HSA_WAIT_STATE_ACTIVE);
	if (v != 5) {
		printf("FAIL signal value %" PRId64 ", expected 5\n", (int64_t)v);
		failures++;
	} else {
		printf("ok signal 7 - 2 = 5\n");
	}

	CHECK(hsa_queue_create(ag.gpu, 1024, HSA_QUEUE_TYPE_MULTI, NULL, NULL, UINT32_MAX,
			       UINT32_MAX, &queue));
	printf("queue %" PRIu64 ": %u packets at %p\n", queue->id, queue->size, queue->base_address);

	if (code_object)
		dispatch_saxpy(code_object, ag.gpu, queue, &cpu_pools);
	if (copy)
		async_copies(ag.cpu, ag.gpu, &cpu_pools, &gpu_pools);

	CHECK(hsa_queue_destroy(queue));
	queue = NULL;
	CHECK(hsa_signal_destroy(sig));
	CHECK(hsa_amd_memory_pool_free(sys));
	CHECK(hsa_amd_memory_pool_free(vram));
	CHECK(hsa_shut_down());
	printf("%s\n", failures ? "FAILED" : "ALL OK");
	return failures ? 1 : 0;
out:
	printf("FAILED\n");
	return 1;
}
