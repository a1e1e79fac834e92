/*
 * berth-monitor watches one running container in place of its shim.
 *
 * A shim ("berthd __berth_shim DIR", see pkg/shim) creates and starts the
 * container with berth's Go runtime. Once it released the container's init
 * (or, with poststart hooks, once the container runs), the shim execve()s
 * this program, which keeps the shim's pid, and with it the container's
 * parent, and the shim's descriptors: its listening socket
 * (DIR/shim.sock), the container's output pipes or pty master, its stdin,
 * and the attach and wait clients that connected before the start. From
 * then on the monitor does what a watching shim did, in well under a
 * megabyte instead of the Go shim's 7 MB (a Go program maps whole
 * page-cache folios of its 16 MB binary as it runs):
 *
 *   - it copies the output into the json-file log (Docker's format, lines
 *     split at 16 KiB, rotated by size) and to attach clients (raw for a
 *     terminal, else Docker's 8-byte multiplexed frames);
 *   - it copies attach clients' input to the container's stdin;
 *   - given init's sync socket (sync=, status=), it reads the start's
 *     outcome there, EOF at init's execve or init's error message
 *     ({"type":"error","error":"..."}), and reports it on the shim's status
 *     pipe as the shim would have: {"started":true} or {"error":"..."};
 *   - it sets the terminal's size, and serves wait clients;
 *   - when the container has ended and its output is drained, it records
 *     the end in DIR/exit.json, itself while berthd watches (berthd then
 *     deletes the container's cgroup and state and unmounts its root
 *     filesystem), else through "berthd __berth_shim_exit DIR CODE", which
 *     does all of it (with init's message when the start failed); then it
 *     closes its clients and ends.
 *
 * The socket's protocol is pkg/shim's: one JSON line, from berthd only
 * (the socket is root's), in the form pkg/shim/client.go writes it:
 *   {"attach":{"stdin":true,"stdout":true,"stderr":true}}
 *   {"resize":{"height":24,"width":80}}
 *   {"wait":true,"record":true}
 * so the fields are found by their exact spelling, not by a JSON parser. A
 * waiter that offers to record is berthd, running: it releases what the
 * container held once exit.json is written and the connection closes.
 *
 * Arguments are key=value (pkg/shim writes them):
 *   dir= exe= (berthd) pid= | exited=CODE, log= log-max-size= log-max-files=,
 *   tty=1, stdin-once=1, listen=FD, stdout=FD, stderr=FD, stdin=FD,
 *   attach=FD:[i][o][e] (repeated), wait=FD[:r] (repeated), sync=FD
 *   status=FD, oom=PATH (the container's cgroup file with oom_kill).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (16 << 10)       /* a log entry's longest line, as Docker's */
#define CLIENT_BACKLOG (4 << 20)  /* output bytes a client may fall behind */
#define MAX_CLIENTS 256
#define REQUEST_MAX 1024
#define DRAIN_MS 2000             /* how long ended clients may take the rest */

enum { STDOUT, STDERR, NSTREAMS };
static const char *stream_names[NSTREAMS] = {"stdout", "stderr"};

enum kind { REQUEST, ATTACH, WAITER };

struct chunk {
	struct chunk *next;
	size_t len, off;
	char data[];
};

struct client {
	int fd;
	enum kind kind;
	int want[NSTREAMS], want_in, in_eof;
	int record; /* a waiter that offered to record the end */
	struct chunk *head, *tail;
	size_t queued;
	char in[4096];  /* read from the client, not yet written to stdin */
	size_t in_len, in_off;
	char req[REQUEST_MAX];
	size_t req_len;
};

static struct {
	const char *dir, *exe, *log_path, *oom_path;
	long long log_max_size;
	int log_max_files;
	int tty, stdin_once;
	int listen_fd, out_fd[NSTREAMS], stdin_fd;
	int pid, pidfd, running, exit_code;
	int sync_fd, status_fd;   /* the start's outcome: read, then reported */
	char start_error[4096];   /* init's error message, a JSON string */
	int log_fd;
	long long log_size;
	struct stat sock; /* shim.sock as listened on */
	int have_sock;
	char line[NSTREAMS][MAX_LINE];
	size_t line_len[NSTREAMS];
	struct client *clients[MAX_CLIENTS];
	int nclients;
} m = {.listen_fd = -1, .out_fd = {-1, -1}, .stdin_fd = -1, .pidfd = -1, .log_fd = -1, .log_max_files = 1,
       .sync_fd = -1, .status_fd = -1};

static void warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("berth-monitor: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void cloexec(int fd)
{
	if (fd >= 0)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- the json-file log ---- */

static void log_open(void)
{
	struct stat st;
	m.log_fd = open(m.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (m.log_fd < 0) {
		warn("open log %s: %s", m.log_path, strerror(errno));
		return;
	}
	m.log_size = fstat(m.log_fd, &st) == 0 ? st.st_size : 0;
}

/* log_rotate shifts NAME.i to NAME.i+1 (dropping the oldest) and starts an
 * empty NAME, as pkg/logs does. */
static void log_rotate(void)
{
	char from[4096], to[4096];
	close(m.log_fd);
	m.log_fd = -1;
	if (m.log_max_files == 1) {
		if (truncate(m.log_path, 0) != 0)
			warn("rotate log: %s", strerror(errno));
	} else {
		for (int i = m.log_max_files - 1; i >= 1; i--) {
			if (i - 1 == 0)
				snprintf(from, sizeof(from), "%s", m.log_path);
			else
				snprintf(from, sizeof(from), "%s.%d", m.log_path, i - 1);
			snprintf(to, sizeof(to), "%s.%d", m.log_path, i);
			if (rename(from, to) != 0 && errno != ENOENT)
				warn("rotate log: %s", strerror(errno));
		}
	}
	log_open();
}

/* rfc3339nano writes now in Go's time.RFC3339Nano, in UTC: trailing zeros
 * of the fraction dropped. */
static size_t rfc3339nano(char *buf, size_t size)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	if (ts.tv_nsec != 0) {
		char frac[16];
		snprintf(frac, sizeof(frac), ".%09ld", ts.tv_nsec);
		size_t l = strlen(frac);
		while (frac[l - 1] == '0')
			frac[--l] = 0;
		memcpy(buf + n, frac, l);
		n += l;
	}
	buf[n++] = 'Z';
	return n;
}

/* log_entry appends {"log":...,"stream":...,"time":...} for one line. */
static void log_entry(int stream, const char *p, size_t len)
{
	static char buf[MAX_LINE * 6 + 128]; /* every byte may become \u00XX */
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	if (m.log_fd < 0)
		return;
	n += (size_t)sprintf(buf, "{\"log\":\"");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (c) {
		case '"': buf[n++] = '\\'; buf[n++] = '"'; break;
		case '\\': buf[n++] = '\\'; buf[n++] = '\\'; break;
		case '\n': buf[n++] = '\\'; buf[n++] = 'n'; break;
		case '\r': buf[n++] = '\\'; buf[n++] = 'r'; break;
		case '\t': buf[n++] = '\\'; buf[n++] = 't'; break;
		default:
			if (c < 0x20 || c == 0x7f) {
				memcpy(buf + n, "\\u00", 4);
				buf[n + 4] = hex[c >> 4];
				buf[n + 5] = hex[c & 15];
				n += 6;
			} else {
				buf[n++] = (char)c;
			}
		}
	}
	n += (size_t)sprintf(buf + n, "\",\"stream\":\"%s\",\"time\":\"", stream_names[stream]);
	n += rfc3339nano(buf + n, sizeof(buf) - n);
	memcpy(buf + n, "\"}\n", 3);
	n += 3;
	if (m.log_max_size > 0 && m.log_size > 0 && m.log_size + (long long)n > m.log_max_size) {
		log_rotate();
		if (m.log_fd < 0)
			return;
	}
	ssize_t w = write(m.log_fd, buf, n);
	if (w > 0)
		m.log_size += w;
}

/* log_output splits a stream's output into lines (at most MAX_LINE each). */
static void log_output(int stream, const char *p, size_t len)
{
	char *line = m.line[stream];
	size_t *ll = &m.line_len[stream];
	for (size_t i = 0; i < len; i++) {
		line[(*ll)++] = p[i];
		if (p[i] == '\n' || *ll == MAX_LINE) {
			log_entry(stream, line, *ll);
			*ll = 0;
		}
	}
}

static void log_flush(void)
{
	for (int s = 0; s < NSTREAMS; s++) {
		if (m.line_len[s] > 0)
			log_entry(s, m.line[s], m.line_len[s]);
		m.line_len[s] = 0;
	}
}

/* ---- clients ---- */

static struct client *client_add(int fd, enum kind kind)
{
	if (m.nclients == MAX_CLIENTS) {
		close(fd);
		return NULL;
	}
	struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->kind = kind;
	cloexec(fd);
	nonblock(fd);
	m.clients[m.nclients++] = c;
	return c;
}

static void client_drop(int i)
{
	struct client *c = m.clients[i];
	close(c->fd);
	while (c->head) {
		struct chunk *next = c->head->next;
		free(c->head);
		c->head = next;
	}
	free(c);
	m.clients[i] = m.clients[--m.nclients];
}

/* client_queue adds output for a client; one that fell too far behind is
 * cut off (output never waits for a slow client). */
static int client_queue(struct client *c, const char *hdr, size_t hlen, const char *p, size_t len)
{
	if (c->queued + hlen + len > CLIENT_BACKLOG)
		return -1;
	struct chunk *ch = malloc(sizeof(*ch) + hlen + len);
	if (!ch)
		return -1;
	ch->next = NULL;
	ch->len = hlen + len;
	ch->off = 0;
	memcpy(ch->data, hdr, hlen);
	memcpy(ch->data + hlen, p, len);
	if (c->tail)
		c->tail->next = ch;
	else
		c->head = ch;
	c->tail = ch;
	c->queued += ch->len;
	return 0;
}

/* client_flush writes what it can; -1 when the client is gone. */
static int client_flush(struct client *c)
{
	while (c->head) {
		struct chunk *ch = c->head;
		ssize_t n = send(c->fd, ch->data + ch->off, ch->len - ch->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		ch->off += (size_t)n;
		c->queued -= (size_t)n;
		if (ch->off < ch->len)
			return 0;
		c->head = ch->next;
		if (!c->head)
			c->tail = NULL;
		free(ch);
	}
	return 0;
}

static void broadcast(int stream, const char *p, size_t len)
{
	char hdr[8] = {0};
	size_t hlen = 0;
	if (!m.tty) {
		hdr[0] = stream == STDERR ? 2 : 1;
		hdr[4] = (char)(len >> 24);
		hdr[5] = (char)(len >> 16);
		hdr[6] = (char)(len >> 8);
		hdr[7] = (char)len;
		hlen = 8;
	}
	for (int i = 0; i < m.nclients; i++) {
		struct client *c = m.clients[i];
		if (c->kind != ATTACH || !c->want[stream])
			continue;
		if (client_queue(c, hdr, hlen, p, len) != 0 || client_flush(c) != 0)
			client_drop(i--);
	}
}

static void close_stdin(void)
{
	if (m.stdin_fd < 0)
		return;
	/* For a terminal, stdin is the pty master, still read for output. */
	if (!m.tty || m.stdin_fd != m.out_fd[STDOUT])
		close(m.stdin_fd);
	m.stdin_fd = -1;
}

static const char *field_after(const char *s, const char *key)
{
	const char *p = strstr(s, key);
	return p ? p + strlen(key) : NULL;
}

/* request handles a client's first line. */
static void request(int i)
{
	struct client *c = m.clients[i];
	const char *line = c->req, *p;
	if (strstr(line, "\"attach\":{")) {
		c->kind = ATTACH;
		c->want_in = strstr(line, "\"stdin\":true") != NULL;
		c->want[STDOUT] = strstr(line, "\"stdout\":true") != NULL;
		c->want[STDERR] = strstr(line, "\"stderr\":true") != NULL;
		/* The ack: from now on this client gets all output. */
		if (send(c->fd, "\0", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
			client_drop(i);
	} else if (strstr(line, "\"wait\":true")) {
		c->kind = WAITER;
		c->record = strstr(line, "\"record\":true") != NULL;
	} else if (strstr(line, "\"resize\":{")) {
		struct winsize ws = {0};
		if ((p = field_after(line, "\"height\":")))
			ws.ws_row = (unsigned short)strtoul(p, NULL, 10);
		if ((p = field_after(line, "\"width\":")))
			ws.ws_col = (unsigned short)strtoul(p, NULL, 10);
		if (m.tty && m.out_fd[STDOUT] >= 0 && ioctl(m.out_fd[STDOUT], TIOCSWINSZ, &ws) != 0) {
			char msg[128];
			int n = snprintf(msg, sizeof(msg), "%s\n", strerror(errno));
			(void)!send(c->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		client_drop(i);
	} else {
		client_drop(i); /* {}: "are you alive?" */
	}
}

/* read_request reads a request byte by byte, so that nothing after its
 * line (an attach client's input) is taken with it. */
static void read_request(int i)
{
	struct client *c = m.clients[i];
	for (;;) {
		char b;
		ssize_t n = read(c->fd, &b, 1);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_drop(i);
			return;
		}
		if (n < 0)
			return;
		if (b == '\n') {
			c->req[c->req_len] = 0;
			request(i);
			return;
		}
		if (c->req_len == REQUEST_MAX - 1) {
			client_drop(i);
			return;
		}
		c->req[c->req_len++] = b;
	}
}

/* client_input reads an attach client's input for the container's stdin. */
static void client_input(int i)
{
	struct client *c = m.clients[i];
	ssize_t n = read(c->fd, c->in, sizeof(c->in));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		if (c->kind == ATTACH && c->want_in && m.stdin_fd >= 0) {
			c->in_len = (size_t)n;
			c->in_off = 0;
		}
		return;
	}
	/* The client's input ended (or it went away: a write will tell). */
	c->in_eof = 1;
	if (c->kind == WAITER) {
		client_drop(i);
		return;
	}
	/* docker: StdinOnce closes a pipe's stdin when the first attached
	 * stdin ends; a terminal's stays open. */
	if (c->want_in && m.stdin_once && !m.tty)
		close_stdin();
}

static void write_stdin(struct client *c)
{
	if (m.stdin_fd < 0) {
		c->in_len = c->in_off = 0;
		return;
	}
	ssize_t n = write(m.stdin_fd, c->in + c->in_off, c->in_len - c->in_off);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		c->in_len = c->in_off = 0; /* the container closed its stdin */
		return;
	}
	c->in_off += (size_t)n;
	if (c->in_off == c->in_len)
		c->in_len = c->in_off = 0;
}

static void accept_client(void)
{
	int fd = accept4(m.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd >= 0)
		client_add(fd, REQUEST);
}

/* ---- the container ---- */

static void output(int stream)
{
	static char buf[32 << 10];
	ssize_t n = read(m.out_fd[stream], buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) { /* the end; a pty says EIO once its last slave closed */
		if (m.stdin_fd == m.out_fd[stream])
			m.stdin_fd = -1;
		close(m.out_fd[stream]);
		m.out_fd[stream] = -1;
		return;
	}
	if (m.log_path)
		log_output(stream, buf, (size_t)n);
	broadcast(stream, buf, (size_t)n);
}

/* json_string copies the JSON string value that follows key in s (quotes
 * and escapes kept, so it stays a JSON string) into out; 0 if none fits. */
static int json_string(const char *s, const char *key, char *out, size_t size)
{
	const char *p = strstr(s, key);
	if (!p || *(p += strlen(key)) != '"')
		return 0;
	size_t i = 1;
	for (; p[i] && p[i] != '"'; i++)
		if (p[i] == '\\' && p[i + 1])
			i++;
	if (p[i] != '"' || i + 2 > size)
		return 0;
	memcpy(out, p, i + 1);
	out[i + 1] = 0;
	return 1;
}

/* start_result reads the start's outcome on init's sync socket: EOF (or a
 * failed read) once init's execve closed it, else init's error message,
 * after which init exits. It reports it on the status pipe, as a Go shim
 * does, with the Go runtime's wording. */
static void start_result(void)
{
	char buf[8192];
	ssize_t n;
	while ((n = recv(m.sync_fd, buf, sizeof(buf) - 1, 0)) < 0 && errno == EINTR)
		;
	close(m.sync_fd);
	m.sync_fd = -1;
	char line[sizeof(m.start_error) + 128];
	int len;
	if (n > 0)
		buf[n] = 0;
	if (n > 0 && strstr(buf, "\"type\":\"error\"") &&
	    json_string(buf, "\"error\":", m.start_error, sizeof(m.start_error))) {
		const char *id = strrchr(m.dir, '/') ? strrchr(m.dir, '/') + 1 : m.dir;
		/* One JSON string: ours, then init's message, without the
		 * message's opening quote. */
		len = snprintf(line, sizeof(line), "{\"error\":\"start container %s: %s}\n", id, m.start_error + 1);
	} else {
		len = snprintf(line, sizeof(line), "{\"started\":true}\n");
	}
	if (len > 0 && (size_t)len < sizeof(line) && write(m.status_fd, line, (size_t)len) != len)
		warn("report the start: %s", strerror(errno));
	close(m.status_fd);
	m.status_fd = -1;
}

static void reap(void)
{
	siginfo_t si = {0};
	if (waitid(P_PIDFD, (id_t)m.pidfd, &si, WEXITED) != 0) {
		if (errno == EINTR)
			return;
		warn("wait for %d: %s", m.pid, strerror(errno));
		m.exit_code = 255;
	} else if (si.si_code == CLD_EXITED) {
		m.exit_code = si.si_status;
	} else {
		m.exit_code = 128 + si.si_status;
	}
	close(m.pidfd);
	m.pidfd = -1;
	m.running = 0;
}

/* berthd_watches: a waiter offered to record the end, berthd running,
 * which releases the container's runtime state, cgroup and mount itself
 * once the end is recorded (pkg/shim's AwaitEnd). */
static int berthd_watches(void)
{
	for (int i = 0; i < m.nclients; i++)
		if (m.clients[i]->kind == WAITER && m.clients[i]->record)
			return 1;
	return 0;
}

/* oom_killed reads the oom_kill count in the container's memory cgroup
 * (oom=, the file pkg/cgroups' OOMFile names): did the kernel's OOM killer
 * end one of its processes? */
static int oom_killed(void)
{
	if (!m.oom_path)
		return 0;
	int fd = open(m.oom_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[1024];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	for (const char *p = buf; (p = strstr(p, "oom_kill ")); p++)
		if (p == buf || p[-1] == '\n')
			return strtoull(p + strlen("oom_kill "), NULL, 10) > 0;
	return 0;
}

/* write_exit writes DIR/exit.json, pkg/shim's Exit, whole or not at all:
 * through exit.json.tmp and a rename, synced if sync. error is a JSON
 * string or NULL. */
static int write_exit(int oom, const char *error, int sync)
{
	char ts[64], json[sizeof(m.start_error) + 256];
	ts[rfc3339nano(ts, sizeof(ts) - 1)] = 0;
	int n = snprintf(json, sizeof(json), "{\"exitCode\":%d,\"oomKilled\":%s,\"finishedAt\":\"%s\"%s%s}",
			 m.exit_code, oom ? "true" : "false", ts, error ? ",\"error\":" : "", error ? error : "");
	if (n < 0 || (size_t)n >= sizeof(json))
		return -1;
	int fd = open("exit.json.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	int ok = write(fd, json, (size_t)n) == n && (!sync || fsync(fd) == 0);
	close(fd);
	if (!ok || rename("exit.json.tmp", "exit.json") != 0) {
		unlink("exit.json.tmp");
		return -1;
	}
	return 0;
}

/* record_exit records the end: with berthd watching, the monitor writes
 * exit.json itself (berthd releases the rest); else it has a berthd
 * started for that delete the container and write exit.json; if that
 * fails too, the monitor writes what it knows. */
static void record_exit(void)
{
	/* A failed start is recorded as a Go shim records it: 255 and init's
	 * message, which only "berthd __berth_shim_exit" takes. */
	if (m.start_error[0])
		m.exit_code = 255;
	else if (berthd_watches() && write_exit(oom_killed(), NULL, 0) == 0)
		return;
	char code[16];
	snprintf(code, sizeof(code), "%d", m.exit_code);
	pid_t pid = fork();
	if (pid == 0) {
		/* ERROR only after a failed start: else the list ends there. */
		execl(m.exe, m.exe, "__berth_shim_exit", m.dir, code, m.start_error[0] ? m.start_error : (char *)NULL,
		      (char *)NULL);
		_exit(127);
	}
	int status = -1;
	if (pid > 0)
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	warn("%s __berth_shim_exit failed (status %d)", m.exe, status);
	(void)write_exit(oom_killed(), "\"recording the exit failed\"", 1);
}

/* finish tells waiters and attachers the container ended, giving
 * attachers DRAIN_MS to take the last output. */
static void finish(void)
{
	close_stdin();
	for (int i = 0; i < m.nclients; i++) {
		if (m.clients[i]->kind != ATTACH || !m.clients[i]->head)
			client_drop(i--);
	}
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (m.nclients > 0) {
		struct pollfd pfd[MAX_CLIENTS];
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = DRAIN_MS - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
		if (left <= 0)
			break;
		for (int i = 0; i < m.nclients; i++)
			pfd[i] = (struct pollfd){.fd = m.clients[i]->fd, .events = POLLOUT};
		if (poll(pfd, (nfds_t)m.nclients, (int)left) < 0 && errno != EINTR)
			break;
		for (int i = m.nclients - 1; i >= 0; i--) {
			if (!pfd[i].revents)
				continue;
			if (client_flush(m.clients[i]) != 0 || !m.clients[i]->head)
				client_drop(i);
		}
	}
	while (m.nclients > 0)
		client_drop(0);
	close(m.listen_fd);
	/* Only our own socket: once exit.json is written, berthd may have
	 * started the container again, with a new shim listening there. */
	struct stat st;
	if (m.have_sock && stat("shim.sock", &st) == 0 && st.st_dev == m.sock.st_dev && st.st_ino == m.sock.st_ino)
		unlink("shim.sock");
}

static int parse_fd(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	return (end == s || v < 0 || v > 1 << 20) ? -1 : (int)v;
}

static int parse_args(int argc, char **argv)
{
	m.running = -1;
	for (int i = 1; i < argc; i++) {
		/* key=value, split into a copy: argv stays as ps shows it. */
		char k[32];
		const char *v = strchr(argv[i], '=');
		if (!v || v - argv[i] >= (long)sizeof(k))
			goto bad;
		memcpy(k, argv[i], (size_t)(v - argv[i]));
		k[v++ - argv[i]] = 0;
		if (!strcmp(k, "dir")) {
			m.dir = v;
		} else if (!strcmp(k, "exe")) {
			m.exe = v;
		} else if (!strcmp(k, "pid")) {
			m.pid = atoi(v);
			m.running = 1;
		} else if (!strcmp(k, "exited")) {
			m.exit_code = atoi(v);
			m.running = 0;
		} else if (!strcmp(k, "log")) {
			m.log_path = v;
		} else if (!strcmp(k, "log-max-size")) {
			m.log_max_size = atoll(v);
		} else if (!strcmp(k, "log-max-files")) {
			m.log_max_files = atoi(v) < 1 ? 1 : atoi(v);
		} else if (!strcmp(k, "tty")) {
			m.tty = !strcmp(v, "1");
		} else if (!strcmp(k, "stdin-once")) {
			m.stdin_once = !strcmp(v, "1");
		} else if (!strcmp(k, "listen")) {
			m.listen_fd = parse_fd(v);
		} else if (!strcmp(k, "stdout")) {
			m.out_fd[STDOUT] = parse_fd(v);
		} else if (!strcmp(k, "stderr")) {
			m.out_fd[STDERR] = parse_fd(v);
		} else if (!strcmp(k, "stdin")) {
			m.stdin_fd = parse_fd(v);
		} else if (!strcmp(k, "oom")) {
			m.oom_path = v;
		} else if (!strcmp(k, "sync")) {
			m.sync_fd = parse_fd(v);
		} else if (!strcmp(k, "status")) {
			m.status_fd = parse_fd(v);
		} else if (!strcmp(k, "attach") || !strcmp(k, "wait")) {
			const char *flags = strchr(v, ':');
			int fd = parse_fd(v);
			if (fd < 0)
				goto bad;
			struct client *c = client_add(fd, !strcmp(k, "wait") ? WAITER : ATTACH);
			if (c && flags) {
				c->record = strchr(flags, 'r') != NULL;
				c->want_in = strchr(flags, 'i') != NULL;
				c->want[STDOUT] = strchr(flags, 'o') != NULL;
				c->want[STDERR] = strchr(flags, 'e') != NULL;
			}
		} else {
			goto bad;
		}
		continue;
	bad:
		warn("bad argument %s", argv[i]);
		return -1;
	}
	if (!m.dir || !m.exe || m.running < 0 || m.listen_fd < 0 || (m.sync_fd < 0) != (m.status_fd < 0)) {
		warn("usage: berth-monitor dir=DIR exe=BERTHD pid=PID|exited=CODE listen=FD [sync=FD status=FD] [...]");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (parse_args(argc, argv) != 0)
		return 2;
	/* What the shim had open beyond what it handed over is no business of
	 * berthd's exit step, which this program starts. */
	syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	if (chdir(m.dir) != 0) {
		warn("chdir %s: %s", m.dir, strerror(errno));
		return 1;
	}
	cloexec(m.listen_fd);
	nonblock(m.listen_fd);
	m.have_sock = stat("shim.sock", &m.sock) == 0;
	for (int s = 0; s < NSTREAMS; s++) {
		cloexec(m.out_fd[s]);
		nonblock(m.out_fd[s]);
	}
	cloexec(m.stdin_fd);
	nonblock(m.stdin_fd);
	cloexec(m.sync_fd);
	cloexec(m.status_fd);
	if (m.log_path)
		log_open();
	if (m.running) {
		m.pidfd = (int)syscall(SYS_pidfd_open, m.pid, 0);
		if (m.pidfd < 0) {
			warn("pidfd_open %d: %s", m.pid, strerror(errno));
			return 1;
		}
		cloexec(m.pidfd);
	}

	enum { LISTEN, PIDFD, SYNC, OUT0, STDIN = OUT0 + NSTREAMS, FIXED };
	struct pollfd pfd[FIXED + MAX_CLIENTS];
	struct client *polled[MAX_CLIENTS];
	while (m.running || m.out_fd[STDOUT] >= 0 || m.out_fd[STDERR] >= 0) {
		int pending_in = 0;
		for (int i = 0; i < m.nclients; i++)
			pending_in |= m.clients[i]->in_len > 0;
		pfd[LISTEN] = (struct pollfd){.fd = m.listen_fd, .events = POLLIN};
		pfd[PIDFD] = (struct pollfd){.fd = m.pidfd, .events = POLLIN};
		pfd[SYNC] = (struct pollfd){.fd = m.sync_fd, .events = POLLIN};
		for (int s = 0; s < NSTREAMS; s++)
			pfd[OUT0 + s] = (struct pollfd){.fd = m.out_fd[s], .events = POLLIN};
		pfd[STDIN] = (struct pollfd){.fd = pending_in ? m.stdin_fd : -1, .events = POLLOUT};
		int n = 0;
		for (int i = 0; i < m.nclients; i++) {
			struct client *c = m.clients[i];
			short ev = 0;
			if (c->kind != ATTACH || (!c->in_eof && c->in_len == 0))
				ev |= POLLIN;
			if (c->head)
				ev |= POLLOUT;
			polled[n] = c;
			pfd[FIXED + n++] = (struct pollfd){.fd = ev ? c->fd : -1, .events = ev};
		}
		if (poll(pfd, (nfds_t)(FIXED + n), -1) < 0) {
			if (errno == EINTR)
				continue;
			warn("poll: %s", strerror(errno));
			break;
		}
		/* The start first: it is reported before the end can be. */
		if (pfd[SYNC].revents && m.sync_fd >= 0)
			start_result();
		for (int s = 0; s < NSTREAMS; s++)
			if (pfd[OUT0 + s].revents && m.out_fd[s] >= 0)
				output(s);
		if (pfd[PIDFD].revents)
			reap();
		if (pfd[STDIN].revents && m.stdin_fd >= 0) {
			for (int i = 0; i < m.nclients; i++)
				if (m.clients[i]->in_len > 0)
					write_stdin(m.clients[i]);
		}
		for (int j = 0; j < n; j++) {
			if (!pfd[FIXED + j].revents)
				continue;
			/* Clients may have been dropped by now: find it again. */
			int i;
			for (i = 0; i < m.nclients && m.clients[i] != polled[j]; i++)
				;
			if (i == m.nclients)
				continue;
			struct client *c = m.clients[i];
			if ((pfd[FIXED + j].revents & POLLOUT) && client_flush(c) != 0) {
				client_drop(i);
				continue;
			}
			if (!(pfd[FIXED + j].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (c->kind == REQUEST)
				read_request(i);
			else
				client_input(i);
		}
		if (pfd[LISTEN].revents)
			accept_client();
	}
	if (m.sync_fd >= 0)
		start_result();
	log_flush();
	if (m.log_fd >= 0)
		close(m.log_fd);
	record_exit();
	finish();
	return 0;
}
