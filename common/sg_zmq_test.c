/* sg_zmq_test.c — sg_actor_end: an actor's OpenSSL thread state is gone when zactor_destroy
 * returns. Without it the state is freed only when the detached thread exits, which may be after
 * the process's exit has run OPENSSL_cleanup: LeakSanitizer then reported the thread's random
 * generator as leaked (a flaky CI failure). OpenSSL's allocations are counted through
 * CRYPTO_set_mem_functions, so the check needs no sanitizer. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include "sg_test.h"
#include "sg_zmq.h"

#define ACTORS 16

static atomic_long live;   /* OpenSSL's blocks allocated and not yet freed */

/* A thread-exit destructor that runs before OpenSSL's (glibc runs them in key order, and this key
 * is made before OpenSSL makes its own) and takes its time: the state must be gone before the
 * thread exits, not only with luck in a race with the check. */
static pthread_key_t slow_exit;

static void slow_exit_destructor(void *v)
{
    (void)v;
    usleep(100 * 1000);
}

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&live, 1);
    return q;
}

static void count_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

/* Uses the thread's own random generator (created on first use, kept for the thread), as the
 * writer does for message ids and the frontend for session tickets. */
static void random_actor(zsock_t *pipe, void *args)
{
    (void)args;
    pthread_setspecific(slow_exit, (void *)1);
    unsigned char b[16];
    bool ok = RAND_bytes(b, sizeof b) == 1;
    zsock_signal(pipe, ok ? 0 : 1);
    zmsg_t *m = zmsg_recv(pipe);   /* $TERM */
    zmsg_destroy(&m);
    sg_actor_end();
}

int main(void)
{
    CHECK(pthread_key_create(&slow_exit, slow_exit_destructor) == 0);
    CHECK(CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) == 1);
    unsigned char b[16];
    CHECK(RAND_bytes(b, sizeof b) == 1);   /* the process's shared generators, kept until exit */
    long before = atomic_load(&live);

    zactor_t *actors[ACTORS];
    for (int i = 0; i < ACTORS; i++) {
        actors[i] = zactor_new(random_actor, NULL);
        CHECK(actors[i] != NULL);
    }
    CHECK(atomic_load(&live) > before);   /* each thread holds state of its own */
    for (int i = 0; i < ACTORS; i++)
        zactor_destroy(&actors[i]);
    long after = atomic_load(&live);
    if (after != before)
        fprintf(stderr, "OpenSSL blocks still held after the actors ended: %ld\n", after - before);
    CHECK(after == before);
    return sg_test_failures ? 1 : 0;
}
