/* fe_iplimit_test.c — per-address limits: the open-connection cap per address (others are not
 * affected, a release makes room), the connect rate (a burst of twice the rate, then the rate),
 * IPv4-mapped IPv6 counted as its IPv4 address, no limits = no tracking, idle addresses swept. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include "fe_iplimit.h"
#include "sg_test.h"

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1234)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static void test_open_cap(void)
{
    fe_iplimit_t *l = fe_iplimit_new(3, 0);
    char ip[INET6_ADDRSTRLEN];
    fe_ipent_t *e[4];
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    for (int i = 0; i < 3; i++)
        CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 0, &e[i], ip) == FE_IP_OK && e[i]);
    CHECK_STR(ip, "10.0.0.1");
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 0, &e[3], ip) == FE_IP_TOO_MANY && !e[3]);
    /* another address is not affected */
    fe_ipent_t *eb;
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&b, 0, &eb, ip) == FE_IP_OK);
    /* a close makes room for one */
    fe_iplimit_release(l, e[0]);
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 0, &e[0], ip) == FE_IP_OK);
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 0, &e[3], ip) == FE_IP_TOO_MANY);

    /* the IPv4-mapped form of the same client counts against the same address */
    struct sockaddr_in6 m = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &m.sin6_addr);
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&m, 0, &e[3], ip) == FE_IP_TOO_MANY);
    CHECK_STR(ip, "10.0.0.1");

    /* idle addresses are forgotten (after a second), busy ones kept */
    fe_iplimit_release(l, eb);
    CHECK(fe_iplimit_size(l) == 2);
    fe_ipent_t *ec;
    struct sockaddr_in c = v4("10.0.0.3");
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&c, 5000, &ec, ip) == FE_IP_OK);
    CHECK(fe_iplimit_size(l) == 2);   /* 10.0.0.2 swept, 10.0.0.3 added */
    fe_iplimit_release(l, NULL);      /* nothing to give back: no effect */
    fe_iplimit_destroy(&l);
    CHECK(l == NULL);
}

static void test_rate(void)
{
    fe_iplimit_t *l = fe_iplimit_new(0, 5);   /* 5/s, bursts of 10 */
    char ip[INET6_ADDRSTRLEN];
    fe_ipent_t *e;
    struct sockaddr_in a = v4("192.0.2.7");
    int ok = 0;
    for (int i = 0; i < 20; i++)
        if (fe_iplimit_admit(l, (struct sockaddr *)&a, 1000, &e, ip) == FE_IP_OK) {
            ok++;
            fe_iplimit_release(l, e);   /* closing does not give the connect back */
        }
    CHECK(ok == 10);
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 1000, &e, ip) == FE_IP_TOO_FAST);
    /* a second later, five more */
    ok = 0;
    for (int i = 0; i < 20; i++)
        if (fe_iplimit_admit(l, (struct sockaddr *)&a, 2000, &e, ip) == FE_IP_OK) {
            ok++;
            fe_iplimit_release(l, e);
        }
    CHECK(ok == 5);
    /* an address that connected and closed stays charged until its bucket is full again */
    CHECK(fe_iplimit_size(l) == 1);
    CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 2100, &e, ip) == FE_IP_TOO_FAST);
    fe_iplimit_destroy(&l);
}

static void test_no_limits(void)
{
    fe_iplimit_t *l = fe_iplimit_new(0, 0);
    char ip[INET6_ADDRSTRLEN];
    fe_ipent_t *e;
    struct sockaddr_in a = v4("10.1.1.1");
    for (int i = 0; i < 1000; i++)
        CHECK(fe_iplimit_admit(l, (struct sockaddr *)&a, 0, &e, ip) == FE_IP_OK && !e);
    CHECK(fe_iplimit_size(l) == 0);
    fe_iplimit_destroy(&l);
}

int main(void)
{
    test_open_cap();
    test_rate();
    test_no_limits();
    TEST_DONE();
}
