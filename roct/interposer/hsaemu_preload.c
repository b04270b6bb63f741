/*
 * hsaemu_preload.so: run the unmodified ROCm user space (libhsakmt, libhsa-runtime64, rocminfo)
 * on the emulated KFD service.
 *
 * Loaded with LD_PRELOAD, it routes what the thunk does with the driver to the KFD service on
 * the Unix socket named by HSAEMU_KFD=unix:PATH (protocol: docs/kfd-service.md):
 *   - open("/dev/kfd") connects and says HELLO (flag NATIVE); the KFD fds are dups of that
 *     socket, so closing the last (or the process's death) is the driver's process release;
 *   - ioctl(kfd_fd, AMDKFD_IOC_*) sends the raw kfd_ioctl_*_args bytes plus the user buffers
 *     the args point to (the pointer table below) and copies the driver's answer back;
 *   - mmap of the KFD fd or a render-node fd asks the service for the object's memfd and maps
 *     it MAP_SHARED where the thunk asked, so the application and the emulated GPU share pages;
 *   - after ALLOC_MEMORY_OF_GPU with KFD_IOC_ALLOC_MEM_FLAGS_USERPTR the pages the thunk already
 *     mapped are copied into the new BO's memfd, which is then mapped over them;
 *   - /dev/dri/renderD* opens give a placeholder fd (/dev/null), the libdrm entry points the
 *     thunk calls (drmOpenRender, drmClose, amdgpu_device_initialize/deinitialize,
 *     amdgpu_get_marketing_name) are answered without a kernel;
 *   - reads of the KFD topology in sysfs are redirected under HSAEMU_SYSFS_ROOT.
 * Blocking AMDKFD_IOC_WAIT_EVENTS calls (ROCr's async-events thread sits in one) travel on a
 * per-thread connection attached to the process, so they never hold up the main connection.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kfd_ioctl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROTO_VERSION 1
#define OP_HELLO 1
#define OP_IOCTL 2
#define OP_MMAP 3
#define OP_CLOSE 4
#define HELLO_NATIVE 0x1u
#define HELLO_ATTACH 0x2u
#define BUF_IN 1u
#define BUF_OUT 2u
#define BUF_INOUT 3u
#define FD_KIND_KFD 0u
#define FD_KIND_RENDER 1u
#define MAX_FDS 65536
#define MAX_BUFS 4
#define DRM_FIRST_RENDER_NODE 128 /* libdrm xf86drm.h */
#define DRM_LAST_RENDER_NODE 255

enum { FD_NONE = 0, FD_KFD = 1, FD_RENDER = 2 };

struct hdr {
	uint32_t size;
	uint32_t op;
	uint64_t seq;
};

/* The connection of this process's KFD process (every open of /dev/kfd shares it). */
struct kfd_conn {
	int fd;   /* private: the application holds dups of it */
	int refs; /* the application's fds of it */
	pid_t owner;
	uint32_t pasid;
	uint64_t seq;
	pthread_mutex_t lock;
	int attach_unsupported; /* the service refused HELLO ATTACH: poll waits instead */
	int attached[256];      /* connections of waiting threads, closed with this one */
	int n_attached;
};

static unsigned char fd_kind[MAX_FDS];
static int render_minor[MAX_FDS];
static struct kfd_conn *fd_conn[MAX_FDS]; /* the connection behind each KFD fd */
static struct kfd_conn *g_conn;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int t_attached_fd = -1;
static __thread struct kfd_conn *t_attached_conn; /* the connection t_attached_fd joins */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real___open_2)(const char *, int);
static int (*real___open64_2)(const char *, int);
static int (*real___openat_2)(int, const char *, int);
static int (*real___openat64_2)(int, const char *, int);
static FILE *(*real_fopen)(const char *, const char *);
static FILE *(*real_fopen64)(const char *, const char *);
static DIR *(*real_opendir)(const char *);
static int (*real_close)(int);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_access)(const char *, int);
static int (*real_drmOpenRender)(int);
static int (*real_drmClose)(int);
static int (*real_amdgpu_device_initialize)(int, uint32_t *, uint32_t *, void **);
static int (*real_amdgpu_device_deinitialize)(void *);
static const char *(*real_amdgpu_get_marketing_name)(void *);

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void resolve(void)
{
#define R(name) real_##name = dlsym(RTLD_NEXT, #name)
	R(open);
	R(open64);
	R(openat);
	R(openat64);
	R(__open_2);
	R(__open64_2);
	R(__openat_2);
	R(__openat64_2);
	R(fopen);
	R(fopen64);
	R(opendir);
	R(close);
	R(ioctl);
	R(mmap);
	R(access);
	R(drmOpenRender);
	R(drmClose);
	R(amdgpu_device_initialize);
	R(amdgpu_device_deinitialize);
	R(amdgpu_get_marketing_name);
#undef R
}

static inline void init(void)
{
	pthread_once(&g_once, resolve);
}

static int debug_on(void)
{
	const char *d = getenv("HSAEMU_DEBUG");
	return d && *d && strcmp(d, "0");
}

static void debug(const char *fmt, ...)
{
	if (!debug_on())
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("hsaemu_preload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static const char *ioctl_name(unsigned long req);

static int kind_of(int fd)
{
	if (fd < 0 || fd >= MAX_FDS)
		return FD_NONE;
	return __atomic_load_n(&fd_kind[fd], __ATOMIC_ACQUIRE);
}

static void set_kind(int fd, int kind)
{
	if (fd >= 0 && fd < MAX_FDS)
		__atomic_store_n(&fd_kind[fd], (unsigned char)kind, __ATOMIC_RELEASE);
}

/* -- socket I/O ---------------------------------------------------------------------------- */

static int write_all(int fd, const struct iovec *iov_in, int n)
{
	struct iovec iov[8];
	size_t total = 0;
	int i;

	if (n > 8)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		iov[i] = iov_in[i];
		total += iov[i].iov_len;
	}
	struct iovec *p = iov;
	while (total) {
		struct msghdr mh = {.msg_iov = p, .msg_iovlen = n};
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		total -= (size_t)w;
		while (n && (size_t)w >= p->iov_len) {
			w -= (ssize_t)p->iov_len;
			p++;
			n--;
		}
		if (n) {
			p->iov_base = (char *)p->iov_base + w;
			p->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Read exactly len bytes; the first fd that arrives as SCM_RIGHTS goes to *fd_out (others are
 * closed). */
static int read_all(int fd, void *buf, size_t len, int *fd_out)
{
	char *p = buf;
	while (len) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * 4)];
			struct cmsghdr align;
		} cm;
		struct iovec iov = {.iov_base = p, .iov_len = len};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = cm.buf,
				    .msg_controllen = sizeof(cm.buf)};
		ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EPIPE;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int *fds = (int *)CMSG_DATA(c);
			for (int i = 0; i < nfd; i++) {
				if (fd_out && *fd_out < 0)
					*fd_out = fds[i];
				else
					real_close(fds[i]);
			}
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* One request/reply on `sock`. The reply body is malloc'ed into *body (caller frees). */
static int transact(int sock, uint64_t seq, uint32_t op, const struct iovec *parts, int nparts,
		    char **body, uint32_t *body_len, int *fd_out)
{
	struct iovec iov[8];
	struct hdr h = {.size = 0, .op = op, .seq = seq};
	int i, r;

	for (i = 0; i < nparts; i++)
		h.size += (uint32_t)parts[i].iov_len;
	iov[0].iov_base = &h;
	iov[0].iov_len = sizeof(h);
	for (i = 0; i < nparts; i++)
		iov[i + 1] = parts[i];
	r = write_all(sock, iov, nparts + 1);
	if (r)
		return r;
	struct hdr rh;
	if (fd_out)
		*fd_out = -1;
	r = read_all(sock, &rh, sizeof(rh), fd_out);
	if (r)
		return r;
	if (rh.op != op || rh.seq != seq || rh.size < 4 || rh.size > (1u << 30))
		return -EBADMSG;
	*body = malloc(rh.size);
	if (!*body)
		return -ENOMEM;
	r = read_all(sock, *body, rh.size, fd_out);
	if (r) {
		free(*body);
		*body = NULL;
		return r;
	}
	*body_len = rh.size;
	return 0;
}

static int32_t rd32(const char *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t rd64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* The driver's message (u32 length at len_off, text at msg_off), shown when HSAEMU_DEBUG is
 * set. */
static void show_msg(const char *what, int32_t status, const char *body, uint32_t len,
		     uint32_t len_off, uint32_t msg_off)
{
	if (!debug_on() || len_off + 4 > len)
		return;
	uint32_t n = (uint32_t)rd32(body + len_off);
	if (msg_off + (uint64_t)n > len)
		return;
	fprintf(stderr, "hsaemu_preload: %s: %s (%d): %.*s\n", what, strerror(-status), status,
		(int)n, body + msg_off);
}

static int connect_service(int cloexec)
{
	const char *spec = getenv("HSAEMU_KFD");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (!spec || strncmp(spec, "unix:", 5) || strlen(spec + 5) >= sizeof(sa.sun_path)) {
		debug("HSAEMU_KFD=%s: expected unix:PATH of a running `hsaemu kfd` service",
		      spec ? spec : "(unset)");
		return -ENOENT; /* as if /dev/kfd did not exist */
	}
	strcpy(sa.sun_path, spec + 5);
	int s = socket(AF_UNIX, SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0), 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		debug("cannot connect to the KFD service at %s: %s", sa.sun_path, strerror(e));
		real_close(s);
		return -e;
	}
	return s;
}

static int hello(int s, uint32_t flags, uint32_t attach_pasid, uint32_t *pasid)
{
	char name[64] = "";
	FILE *f = real_fopen ? real_fopen("/proc/self/comm", "r") : NULL;
	if (f) {
		if (fgets(name, sizeof(name), f))
			name[strcspn(name, "\n")] = 0;
		fclose(f);
	}
	uint32_t head[4] = {PROTO_VERSION, flags, (uint32_t)getpid(), (uint32_t)strlen(name)};
	struct iovec parts[3] = {{head, sizeof(head)}, {name, strlen(name)}, {&attach_pasid, 4}};
	char *body = NULL;
	uint32_t len = 0;
	int r = transact(s, 1, OP_HELLO, parts, (flags & HELLO_ATTACH) ? 3 : 2, &body, &len, NULL);
	if (r)
		return r;
	int32_t status = rd32(body);
	if (status == 0 && len >= 12)
		*pasid = (uint32_t)rd32(body + 8);
	else if (status == 0)
		status = -EBADMSG;
	else
		show_msg("HELLO", status, body, len, 12, 16);
	free(body);
	return status;
}

/* -- /dev/kfd -------------------------------------------------------------------------------- */

/* Every open of /dev/kfd in a process is the same KFD process (kfd_create_process finds the
 * one of current->mm), so the application gets dups of one private socket: the process ends
 * when the last of them is closed, or the process dies. */
static int open_kfd(int flags)
{
	int fd;
	pthread_mutex_lock(&g_lock);
	struct kfd_conn *c = g_conn;
	if (c && c->owner == getpid()) {
		fd = fcntl(c->fd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 3);
		if (fd >= 0 && fd >= MAX_FDS) {
			real_close(fd);
			fd = -1;
			errno = EMFILE;
		}
		if (fd >= 0) {
			c->refs++;
			fd_conn[fd] = c;
			set_kind(fd, FD_KFD);
		}
		pthread_mutex_unlock(&g_lock);
		debug("/dev/kfd again -> fd %d, pasid %u", fd, c->pasid);
		return fd;
	}
	int s = connect_service(1);
	if (s < 0) {
		pthread_mutex_unlock(&g_lock);
		errno = -s;
		return -1;
	}
	uint32_t pasid = 0;
	int r = hello(s, HELLO_NATIVE, 0, &pasid);
	if (r) {
		real_close(s);
		pthread_mutex_unlock(&g_lock);
		errno = -r;
		return -1;
	}
	fd = fcntl(s, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 3);
	c = calloc(1, sizeof(*c));
	if (!c || fd < 0 || fd >= MAX_FDS) {
		int e = fd < 0 ? errno : ENOMEM;
		free(c);
		if (fd >= 0)
			real_close(fd);
		real_close(s);
		pthread_mutex_unlock(&g_lock);
		errno = e;
		return -1;
	}
	c->fd = s;
	c->refs = 1;
	c->owner = getpid();
	c->pasid = pasid;
	c->seq = 1;
	pthread_mutex_init(&c->lock, NULL);
	g_conn = c;
	fd_conn[fd] = c;
	set_kind(fd, FD_KFD);
	pthread_mutex_unlock(&g_lock);
	debug("/dev/kfd -> fd %d, pasid %u", fd, pasid);
	return fd;
}

static struct kfd_conn *conn_for(int fd)
{
	return kind_of(fd) == FD_KFD ? fd_conn[fd] : NULL;
}

static void close_kfd(int fd)
{
	pthread_mutex_lock(&g_lock);
	struct kfd_conn *c = conn_for(fd);
	set_kind(fd, FD_NONE);
	if (fd >= 0 && fd < MAX_FDS)
		fd_conn[fd] = NULL;
	if (c && c->owner == getpid() && --c->refs == 0) {
		char *body = NULL;
		uint32_t len;
		pthread_mutex_lock(&c->lock);
		if (!transact(c->fd, ++c->seq, OP_CLOSE, NULL, 0, &body, &len, NULL))
			free(body);
		pthread_mutex_unlock(&c->lock);
		for (int i = 0; i < c->n_attached; i++) {
			/* wakes a thread parked in WAIT_EVENTS on it (close alone would not) */
			shutdown(c->attached[i], SHUT_RDWR);
			real_close(c->attached[i]);
		}
		c->n_attached = 0;
		real_close(c->fd);
		/* c is not freed: a thread still inside an ioctl may hold it, and a thread's cached
		 * attached connection is matched against it, so a new open never reuses its address */
		g_conn = NULL;
	}
	pthread_mutex_unlock(&g_lock);
}

/* -- ioctl ----------------------------------------------------------------------------------- */

struct ubuf {
	uint64_t addr;
	uint32_t len;
	uint32_t dir;
};

/* The user buffers an ioctl's args point to (amdkfd's copy_from_user/copy_to_user of them). */
static int pointer_bufs(unsigned long req, void *arg, struct ubuf *b)
{
	switch (req) {
	case AMDKFD_IOC_GET_PROCESS_APERTURES_NEW: {
		struct kfd_ioctl_get_process_apertures_new_args *a = arg;
		if (!a->kfd_process_device_apertures_ptr || !a->num_of_nodes)
			return 0;
		/* inout: entries the driver does not fill keep the caller's bytes */
		b[0] = (struct ubuf){a->kfd_process_device_apertures_ptr,
				     a->num_of_nodes * (uint32_t)sizeof(struct kfd_process_device_apertures),
				     BUF_INOUT};
		return 1;
	}
	case AMDKFD_IOC_MAP_MEMORY_TO_GPU:
	case AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU: {
		struct kfd_ioctl_map_memory_to_gpu_args *a = arg; /* same layout for unmap */
		if (!a->device_ids_array_ptr || !a->n_devices)
			return 0;
		b[0] = (struct ubuf){a->device_ids_array_ptr, a->n_devices * 4u, BUF_IN};
		return 1;
	}
	case AMDKFD_IOC_WAIT_EVENTS: {
		struct kfd_ioctl_wait_events_args *a = arg;
		if (!a->events_ptr || !a->num_events)
			return 0;
		b[0] = (struct ubuf){a->events_ptr,
				     a->num_events * (uint32_t)sizeof(struct kfd_event_data), BUF_INOUT};
		return 1;
	}
	case AMDKFD_IOC_SET_CU_MASK: {
		struct kfd_ioctl_set_cu_mask_args *a = arg;
		if (!a->cu_mask_ptr || !a->num_cu_mask)
			return 0;
		b[0] = (struct ubuf){a->cu_mask_ptr, a->num_cu_mask / 8, BUF_IN};
		return 1;
	}
	case AMDKFD_IOC_GET_TILE_CONFIG: {
		struct kfd_ioctl_get_tile_config_args *a = arg;
		int n = 0;
		if (a->tile_config_ptr && a->num_tile_configs)
			b[n++] = (struct ubuf){a->tile_config_ptr, a->num_tile_configs * 4u, BUF_INOUT};
		if (a->macro_tile_config_ptr && a->num_macro_tile_configs)
			b[n++] = (struct ubuf){a->macro_tile_config_ptr,
					       a->num_macro_tile_configs * 4u, BUF_INOUT};
		return n;
	}
	default:
		return 0;
	}
}

/* One IOCTL message on `sock`. Returns 0 or -errno (the driver's, or a transport failure). */
static int ioctl_on(int sock, uint64_t seq, unsigned long req, void *arg)
{
	uint32_t args_len = _IOC_SIZE(req);
	struct ubuf b[MAX_BUFS];
	int nb = arg ? pointer_bufs(req, arg, b) : 0;
	struct iovec parts[2 + MAX_BUFS + MAX_BUFS];
	int np = 0;
	uint32_t head[4];
	uint64_t req64 = req;
	char fixed[16];

	if (args_len && !arg)
		return -EFAULT;
	memcpy(fixed, &req64, 8);
	head[0] = args_len;
	head[1] = (uint32_t)nb;
	memcpy(fixed + 8, head, 8);
	parts[np++] = (struct iovec){fixed, 16};
	if (args_len)
		parts[np++] = (struct iovec){arg, args_len};
	for (int i = 0; i < nb; i++)
		parts[np++] = (struct iovec){&b[i], sizeof(b[i])};
	for (int i = 0; i < nb; i++)
		if (b[i].dir & BUF_IN)
			parts[np++] = (struct iovec){(void *)(uintptr_t)b[i].addr, b[i].len};
	_Static_assert(sizeof(struct ubuf) == 16, "ubuf is the wire record");

	char *body = NULL;
	uint32_t len = 0;
	int r = transact(sock, seq, OP_IOCTL, parts, np, &body, &len, NULL);
	if (r)
		return r;
	int32_t status = rd32(body);
	if (len < 16) {
		free(body);
		return -EBADMSG;
	}
	uint32_t rargs = (uint32_t)rd32(body + 4), rout = (uint32_t)rd32(body + 8);
	if (16 + (uint64_t)rargs + rout > len) {
		free(body);
		return -EBADMSG;
	}
	if (status == 0) {
		/* amdkfd copies the args back only for _IOC_READ requests */
		if ((_IOC_DIR(req) & _IOC_READ) && rargs == args_len && args_len)
			memcpy(arg, body + 16, args_len);
		const char *out = body + 16 + rargs;
		uint32_t off = 0;
		for (int i = 0; i < nb; i++) {
			if (!(b[i].dir & BUF_OUT))
				continue;
			if (off + b[i].len > rout)
				break;
			memcpy((void *)(uintptr_t)b[i].addr, out + off, b[i].len);
			off += b[i].len;
		}
	} else {
		if (debug_on()) {
			char what[64];
			snprintf(what, sizeof(what), "AMDKFD_IOC_%s", ioctl_name(req));
			show_msg(what, status, body, len, 12, 16 + rargs + rout);
		}
	}
	free(body);
	return status;
}

/* A connection of this thread attached to the process, for waits that may block. */
static int attached_fd(struct kfd_conn *c)
{
	if (t_attached_fd >= 0 && t_attached_conn == c && g_conn == c)
		return t_attached_fd;
	if (c->attach_unsupported)
		return -1;
	int s = connect_service(1);
	if (s < 0)
		return -1;
	uint32_t pasid = 0;
	int r = hello(s, HELLO_NATIVE | HELLO_ATTACH, c->pasid, &pasid);
	if (r || pasid != c->pasid) {
		debug("the service refused an attached connection (%d): waits will poll", r);
		c->attach_unsupported = 1;
		real_close(s);
		return -1;
	}
	pthread_mutex_lock(&g_lock);
	if (g_conn == c && c->n_attached < (int)(sizeof(c->attached) / sizeof(c->attached[0]))) {
		c->attached[c->n_attached++] = s;
	} else {
		pthread_mutex_unlock(&g_lock);
		real_close(s);
		return -1;
	}
	pthread_mutex_unlock(&g_lock);
	t_attached_fd = s;
	t_attached_conn = c;
	return s;
}

static int hsaemu_share_userptr(struct kfd_conn *c, uint64_t va, uint64_t size,
				uint64_t mmap_offset);

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_events(struct kfd_conn *c, struct kfd_ioctl_wait_events_args *a)
{
	if (a->timeout != 0) {
		int s = attached_fd(c);
		if (s >= 0)
			return ioctl_on(s, 1, AMDKFD_IOC_WAIT_EVENTS, a);
	}
	/* No attached connection: poll with zero timeouts so the process's connection stays
	 * free between polls. */
	uint32_t timeout = a->timeout;
	int64_t deadline = now_ms() + timeout;
	useconds_t nap = 50;
	for (;;) {
		a->timeout = 0;
		pthread_mutex_lock(&c->lock);
		int r = ioctl_on(c->fd, ++c->seq, AMDKFD_IOC_WAIT_EVENTS, a);
		pthread_mutex_unlock(&c->lock);
		a->timeout = timeout;
		if (r || a->wait_result != KFD_IOC_WAIT_RESULT_TIMEOUT || timeout == 0)
			return r;
		if (timeout != 0xFFFFFFFFu && now_ms() >= deadline)
			return 0;
		usleep(nap);
		if (nap < 2000)
			nap *= 2;
	}
}

/* AMDKFD_IOC_* names by command number (kfd_ioctl.h), for HSAEMU_DEBUG lines. */
static const char *ioctl_name(unsigned long req)
{
	static const char *const names[] = {
		[0x01] = "GET_VERSION", [0x02] = "CREATE_QUEUE", [0x03] = "DESTROY_QUEUE",
		[0x04] = "SET_MEMORY_POLICY", [0x05] = "GET_CLOCK_COUNTERS",
		[0x06] = "GET_PROCESS_APERTURES", [0x07] = "UPDATE_QUEUE", [0x08] = "CREATE_EVENT",
		[0x09] = "DESTROY_EVENT", [0x0a] = "SET_EVENT", [0x0b] = "RESET_EVENT",
		[0x0c] = "WAIT_EVENTS", [0x11] = "SET_SCRATCH_BACKING_VA",
		[0x12] = "GET_TILE_CONFIG", [0x13] = "SET_TRAP_HANDLER",
		[0x14] = "GET_PROCESS_APERTURES_NEW", [0x15] = "ACQUIRE_VM",
		[0x16] = "ALLOC_MEMORY_OF_GPU", [0x17] = "FREE_MEMORY_OF_GPU",
		[0x18] = "MAP_MEMORY_TO_GPU", [0x19] = "UNMAP_MEMORY_FROM_GPU",
		[0x1a] = "SET_CU_MASK", [0x1b] = "GET_QUEUE_WAVE_STATE", [0x1c] = "GET_DMABUF_INFO",
		[0x1d] = "IMPORT_DMABUF", [0x1e] = "ALLOC_QUEUE_GWS", [0x1f] = "SMI_EVENTS",
		[0x20] = "SVM", [0x21] = "SET_XNACK_MODE", [0x22] = "CRIU_OP",
		[0x23] = "AVAILABLE_MEMORY",
	};
	unsigned nr = _IOC_NR(req);
	if (_IOC_TYPE(req) == 'K' && nr < sizeof(names) / sizeof(names[0]) && names[nr])
		return names[nr];
	if (_IOC_TYPE(req) == 'K' && nr == 0x82)
		return "DBG_TRAP (ROCm DKMS only)";
	return "unknown";
}

static int kfd_ioctl(int fd, unsigned long req, void *arg)
{
	struct kfd_conn *c = conn_for(fd);
	if (!c || c->owner != getpid()) {
		/* amdkfd: a KFD fd used by another process (e.g. after fork) is EBADF */
		errno = EBADF;
		return -1;
	}
	int r;
	if (req == AMDKFD_IOC_WAIT_EVENTS && arg) {
		r = wait_events(c, arg);
	} else {
		struct kfd_ioctl_alloc_memory_of_gpu_args in;
		if (req == AMDKFD_IOC_ALLOC_MEMORY_OF_GPU && arg)
			memcpy(&in, arg, sizeof(in));
		pthread_mutex_lock(&c->lock);
		r = ioctl_on(c->fd, ++c->seq, req, arg);
		pthread_mutex_unlock(&c->lock);
		if (!r && req == AMDKFD_IOC_ALLOC_MEMORY_OF_GPU && arg &&
		    (in.flags & KFD_IOC_ALLOC_MEM_FLAGS_USERPTR)) {
			struct kfd_ioctl_alloc_memory_of_gpu_args *a = arg;
			r = hsaemu_share_userptr(c, in.va_addr, in.size, a->mmap_offset);
		}
	}
	debug("AMDKFD_IOC_%s (nr %#x) -> %d%s%s", ioctl_name(req), (unsigned)_IOC_NR(req), r,
	      r ? " " : "", r ? strerror(-r) : "");
	if (!r && req == AMDKFD_IOC_CREATE_QUEUE && arg) {
		static const char *const types[] = {"COMPUTE", "SDMA", "COMPUTE_AQL", "SDMA_XGMI"};
		struct kfd_ioctl_create_queue_args *q = arg;
		debug("queue %u: KFD_IOC_QUEUE_TYPE_%s, %u-byte ring at %#llx", q->queue_id,
		      q->queue_type < 4 ? types[q->queue_type] : "?", q->ring_size,
		      (unsigned long long)q->ring_base_address);
	}
	if (r) {
		errno = -r;
		return -1;
	}
	return 0;
}

/* -- mmap ------------------------------------------------------------------------------------ */

/* MMAP message: the memfd of the object at `offset`, and where in it the object starts. */
static int service_mmap(struct kfd_conn *c, uint64_t offset, uint64_t length, int prot,
			uint32_t fd_kind_, int *memfd, uint64_t *file_off)
{
	struct {
		uint64_t offset, length;
		uint32_t prot, fd_kind;
	} req = {offset, length, (uint32_t)prot, fd_kind_};
	struct iovec part = {&req, sizeof(req)};
	char *body = NULL;
	uint32_t len = 0;
	pthread_mutex_lock(&c->lock);
	int r = transact(c->fd, ++c->seq, OP_MMAP, &part, 1, &body, &len, memfd);
	pthread_mutex_unlock(&c->lock);
	if (r)
		return r;
	int32_t status = rd32(body);
	if (status == 0 && (len < 24 || *memfd < 0))
		status = -EBADMSG;
	if (status == 0)
		*file_off = rd64(body + 12);
	else
		show_msg("mmap", status, body, len, 20, 24);
	free(body);
	if (status && *memfd >= 0) {
		real_close(*memfd);
		*memfd = -1;
	}
	return status;
}

static int hsaemu_share_userptr(struct kfd_conn *c, uint64_t va, uint64_t size, uint64_t mmap_offset)
{
	int memfd = -1;
	uint64_t off = 0;
	int r = service_mmap(c, mmap_offset, size, PROT_READ | PROT_WRITE, FD_KIND_KFD, &memfd, &off);
	if (r) {
		debug("USERPTR BO at %#lx: the service gave no memfd (%d)", (unsigned long)va, r);
		return r;
	}
	/* the pages the application already has become the BO's first contents */
	uint64_t done = 0;
	while (done < size) {
		ssize_t w = pwrite(memfd, (void *)(uintptr_t)(va + done), size - done,
				   (off_t)(off + done));
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			real_close(memfd);
			return r;
		}
		done += (uint64_t)w;
	}
	void *p = real_mmap((void *)(uintptr_t)va, size, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_FIXED, memfd, (off_t)off);
	r = p == MAP_FAILED ? -errno : 0;
	real_close(memfd);
	debug("USERPTR [%#lx, +%#lx) now shares the BO's memfd (%d)", (unsigned long)va,
	      (unsigned long)size, r);
	return r;
}

static void *device_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	int kind = kind_of(fd);
	if (prot == PROT_NONE) {
		/* the thunk reserves non-host-visible VRAM this way: address space only */
		return real_mmap(addr, length, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (flags & MAP_FIXED), -1,
				 0);
	}
	struct kfd_conn *c = g_conn;
	if (!c || c->owner != getpid()) {
		errno = EBADF;
		return MAP_FAILED;
	}
	int memfd = -1;
	uint64_t off = 0;
	int r = service_mmap(c, (uint64_t)offset, length, prot,
			     kind == FD_KFD ? FD_KIND_KFD : FD_KIND_RENDER, &memfd, &off);
	if (r) {
		errno = -r;
		return MAP_FAILED;
	}
	void *p = real_mmap(addr, length, prot, MAP_SHARED | (flags & (MAP_FIXED | MAP_NORESERVE)),
			    memfd, (off_t)off);
	int e = errno;
	debug("mmap offset %#lx length %#zx at %p -> %p", (unsigned long)offset, length, addr, p);
	real_close(memfd);
	errno = e;
	return p;
}

/* -- path redirection ------------------------------------------------------------------------ */

static const char *const sysfs_prefixes[] = {"/sys/devices/virtual/kfd/", "/sys/class/kfd/",
					     "/sys/class/drm/renderD"};

/* Redirects a KFD sysfs path under HSAEMU_SYSFS_ROOT into buf; returns the path to use. */
static const char *redirect(const char *path, char *buf, size_t n)
{
	const char *root = getenv("HSAEMU_SYSFS_ROOT");
	if (!path || !root || !*root || path[0] != '/')
		return path;
	for (size_t i = 0; i < sizeof(sysfs_prefixes) / sizeof(sysfs_prefixes[0]); i++) {
		const char *pre = sysfs_prefixes[i];
		size_t l = strlen(pre);
		/* the prefix, or the directory it names without its trailing slash */
		int dir = pre[l - 1] == '/' && strlen(path) == l - 1 && !strncmp(path, pre, l - 1);
		if (!strncmp(path, pre, l) || dir) {
			if ((size_t)snprintf(buf, n, "%s%s", root, path) >= n)
				return path;
			return buf;
		}
	}
	return path;
}

static int render_minor_of(const char *path)
{
	int minor;
	char extra;
	if (!path || sscanf(path, "/dev/dri/renderD%d%c", &minor, &extra) != 1)
		return -1;
	return minor;
}

static int open_render(int minor, int flags)
{
	if (minor < DRM_FIRST_RENDER_NODE || minor > DRM_LAST_RENDER_NODE) {
		errno = ENOENT;
		return -1;
	}
	if (!getenv("HSAEMU_KFD")) {
		errno = ENOENT;
		return -1;
	}
	/* a placeholder: every use of a render fd the thunk makes is answered here */
	int fd = real_open("/dev/null", O_RDWR | (flags & O_CLOEXEC));
	if (fd < 0)
		return -1;
	if (fd >= MAX_FDS) {
		real_close(fd);
		errno = EMFILE;
		return -1;
	}
	render_minor[fd] = minor;
	set_kind(fd, FD_RENDER);
	debug("/dev/dri/renderD%d -> placeholder fd %d", minor, fd);
	return fd;
}

/* Returns -2 when `path` is not ours (the caller opens it for real). */
static int open_special(const char *path, int flags)
{
	if (!path)
		return -2;
	if (!strcmp(path, "/dev/kfd") && getenv("HSAEMU_KFD"))
		return open_kfd(flags);
	int minor = render_minor_of(path);
	if (minor >= 0 && getenv("HSAEMU_KFD"))
		return open_render(minor, flags);
	return -2;
}

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define OPEN_BODY(realfn, ...)                                                                 \
	init();                                                                                \
	int sp = open_special(path, flags);                                                    \
	if (sp != -2)                                                                          \
		return sp;                                                                     \
	char buf[4096];                                                                        \
	path = redirect(path, buf, sizeof(buf));                                               \
	return (realfn)(__VA_ARGS__)

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real_open, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real_open64 ? real_open64 : real_open, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real_openat, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real_openat64 ? real_openat64 : real_openat, dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	OPEN_BODY(real___open_2, path, flags);
}

int __open64_2(const char *path, int flags)
{
	OPEN_BODY(real___open64_2 ? real___open64_2 : real___open_2, path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	OPEN_BODY(real___openat_2, dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	OPEN_BODY(real___openat64_2 ? real___openat64_2 : real___openat_2, dirfd, path, flags);
}

FILE *fopen(const char *path, const char *mode)
{
	init();
	char buf[4096];
	return real_fopen(redirect(path, buf, sizeof(buf)), mode);
}

FILE *fopen64(const char *path, const char *mode)
{
	init();
	char buf[4096];
	return (real_fopen64 ? real_fopen64 : real_fopen)(redirect(path, buf, sizeof(buf)), mode);
}

DIR *opendir(const char *path)
{
	init();
	char buf[4096];
	return real_opendir(redirect(path, buf, sizeof(buf)));
}

int access(const char *path, int mode)
{
	init();
	if (getenv("HSAEMU_KFD") && (!strcmp(path, "/dev/kfd") || render_minor_of(path) >= 0))
		return 0;
	char buf[4096];
	return real_access(redirect(path, buf, sizeof(buf)), mode);
}

int close(int fd)
{
	init();
	int kind = kind_of(fd);
	if (kind == FD_KFD)
		close_kfd(fd);
	else if (kind == FD_RENDER)
		set_kind(fd, FD_NONE);
	return real_close(fd);
}

int ioctl(int fd, unsigned long request, ...)
{
	init();
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	int kind = kind_of(fd);
	if (kind == FD_KFD)
		return kfd_ioctl(fd, request, arg);
	if (kind == FD_RENDER) {
		/* the amdgpu DRM ioctls are not emulated: the libdrm calls the thunk makes are */
		debug("ioctl %#lx on a render-node placeholder: not emulated", request);
		errno = ENOTTY;
		return -1;
	}
	return real_ioctl(fd, request, arg);
}

void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	init();
	if (fd >= 0 && !(flags & MAP_ANONYMOUS) && kind_of(fd) != FD_NONE)
		return device_mmap(addr, length, prot, flags, fd, offset);
	return real_mmap(addr, length, prot, flags, fd, offset);
}

void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
	__attribute__((alias("mmap")));

/* -- libdrm ---------------------------------------------------------------------------------- */

struct fake_amdgpu_dev {
	int minor;
	char name[128];
};

#define MAX_DEVS 64
static struct fake_amdgpu_dev *g_devs[MAX_DEVS];

static int is_fake_dev(void *h)
{
	for (int i = 0; i < MAX_DEVS; i++)
		if (h && g_devs[i] == h)
			return 1;
	return 0;
}

int drmOpenRender(int minor)
{
	init();
	if (getenv("HSAEMU_KFD")) {
		int fd = open_render(minor, O_CLOEXEC);
		return fd < 0 ? -errno : fd; /* libdrm returns -errno on failure */
	}
	return real_drmOpenRender ? real_drmOpenRender(minor) : -ENODEV;
}

int drmClose(int fd)
{
	init();
	if (kind_of(fd) == FD_RENDER)
		return close(fd);
	return real_drmClose ? real_drmClose(fd) : close(fd);
}

/* The marketing name of the GPU behind a render minor: the product_name amdgpu shows in sysfs
 * (materialised under HSAEMU_SYSFS_ROOT), else empty. */
static void marketing_name(int minor, char *out, size_t n)
{
	char path[256];
	snprintf(path, sizeof(path), "/sys/class/drm/renderD%d/device/product_name", minor);
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (fgets(out, (int)n, f))
		out[strcspn(out, "\n")] = 0;
	fclose(f);
}

int amdgpu_device_initialize(int fd, uint32_t *major, uint32_t *minor, void **handle)
{
	init();
	if (kind_of(fd) != FD_RENDER) {
		if (real_amdgpu_device_initialize)
			return real_amdgpu_device_initialize(fd, major, minor, handle);
		return -ENODEV;
	}
	struct fake_amdgpu_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->minor = render_minor[fd];
	marketing_name(d->minor, d->name, sizeof(d->name));
	pthread_mutex_lock(&g_lock);
	int slot = -1;
	for (int i = 0; i < MAX_DEVS && slot < 0; i++)
		if (!g_devs[i])
			slot = i;
	if (slot >= 0)
		g_devs[slot] = d;
	pthread_mutex_unlock(&g_lock);
	if (slot < 0) {
		free(d);
		return -ENOMEM;
	}
	/* the DRM interface version amdgpu reports (3.x: the KFD-capable amdgpu) */
	if (major)
		*major = 3;
	if (minor)
		*minor = 46;
	*handle = d;
	return 0;
}

int amdgpu_device_deinitialize(void *handle)
{
	init();
	pthread_mutex_lock(&g_lock);
	for (int i = 0; i < MAX_DEVS; i++) {
		if (handle && g_devs[i] == handle) {
			g_devs[i] = NULL;
			pthread_mutex_unlock(&g_lock);
			free(handle);
			return 0;
		}
	}
	pthread_mutex_unlock(&g_lock);
	return real_amdgpu_device_deinitialize ? real_amdgpu_device_deinitialize(handle) : -EINVAL;
}

const char *amdgpu_get_marketing_name(void *handle)
{
	init();
	if (is_fake_dev(handle)) {
		struct fake_amdgpu_dev *d = handle;
		return d->name[0] ? d->name : NULL;
	}
	return real_amdgpu_get_marketing_name ? real_amdgpu_get_marketing_name(handle) : NULL;
}
