/* fe_tickets_test.c — the ticket-key file parser: keys in file order (the last encrypts), name /
 * HMAC / AES split, comments, blank lines, CRLF and surrounding blanks; and each refusal with the
 * line (and column) it names: wrong length, non-hex, a repeated key name, no keys, too many; and
 * fe_tickets_generate writes a file the parser takes and never overwrites one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fe_tickets.h"
#include "sg_test.h"

static char *key_hex(int seed, char *out)
{
    for (int i = 0; i < 80; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned)(seed * 7 + i) & 0xff);
    return out;
}

static sg_rc parse(const char *text, fe_ticket_keys_t *k, char *err)
{
    return fe_tickets_parse(text, strlen(text), k, err, 256);
}

static void test_good(void)
{
    char a[161], b[161], text[1024], err[256] = "";
    fe_ticket_keys_t k;
    snprintf(text, sizeof text, "# comment\n\n  %s \r\n\t%s", key_hex(1, a), key_hex(2, b));
    CHECK_RC(parse(text, &k, err), SG_OK);
    CHECK(k.n == 2);
    CHECK(k.keys[0].name[0] == 7 && k.keys[0].name[15] == 7 + 15);
    CHECK(k.keys[0].hmac[0] == 7 + 16 && k.keys[0].aes[0] == 7 + 48 && k.keys[0].aes[31] == 7 + 79);
    CHECK(k.keys[1].name[0] == 14);   /* file order: the last line is the newest */
    /* upper-case hex is a key too */
    for (char *p = a; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(text, sizeof text, "%s\n", a);
    CHECK_RC(parse(text, &k, err), SG_OK);
    CHECK(k.n == 1 && k.keys[0].name[0] == 7);
}

static void test_refusals(void)
{
    char a[161], text[4096], err[256];
    fe_ticket_keys_t k;
    CHECK_RC(parse("", &k, err), SG_E_INVALID);
    CHECK(strstr(err, "no keys") != NULL);
    CHECK_RC(parse("# only a comment\n\n", &k, err), SG_E_INVALID);
    CHECK(strstr(err, "no keys") != NULL);
    snprintf(text, sizeof text, "%s\nabcd\n", key_hex(1, a));
    CHECK_RC(parse(text, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 2: 4 hex digits; a key is 160") != NULL);
    snprintf(text, sizeof text, "%s0\n", key_hex(1, a));   /* 161 */
    CHECK_RC(parse(text, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 1: 161 hex digits") != NULL);
    key_hex(1, a);
    a[9] = 'g';
    snprintf(text, sizeof text, "\n  %s\n", a);
    CHECK_RC(parse(text, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 2, column 12: not a hex digit") != NULL);
    key_hex(1, a);
    a[100] = ' ';   /* a blank inside a key */
    CHECK_RC(parse(a, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 1, column 101: not a hex digit") != NULL);
    char b[161];
    key_hex(1, b);
    memcpy(b + 32, key_hex(2, a) + 32, 128);   /* same name, other secrets */
    snprintf(text, sizeof text, "%s\n#\n%s\n", key_hex(1, a), b);
    CHECK_RC(parse(text, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 3: the key name (first 32 hex digits) is the one of line 1") != NULL);
    size_t n = 0;
    for (int i = 0; i < FE_TICKET_MAX_KEYS + 1; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s\n", key_hex(i, a));
    CHECK_RC(parse(text, &k, err), SG_E_INVALID);
    CHECK(strstr(err, "line 17: more than 16 keys") != NULL);
    /* a NUL byte in the middle of a line is not hex either */
    key_hex(3, a);
    a[0] = '\0';
    CHECK_RC(fe_tickets_parse(a, 160, &k, err, sizeof err), SG_E_INVALID);
    CHECK(strstr(err, "column 1: not a hex digit") != NULL);
}

static void test_generate(void)
{
    char dir[] = "/tmp/fe_tickets_test.XXXXXX", path[64], err[256], text[1024];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/ticket.keys", dir);
    CHECK_RC(fe_tickets_generate(path), SG_OK);
    CHECK_RC(fe_tickets_generate(path), SG_E_INVALID);   /* never overwrites */
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text, f) : 0;
    if (f)
        fclose(f);
    fe_ticket_keys_t k;
    CHECK_RC(fe_tickets_parse(text, n, &k, err, sizeof err), SG_OK);
    CHECK(k.n == 1);
    fe_tickets_t *t = fe_tickets_new(path, 3600);
    CHECK(t != NULL);
    fe_tickets_destroy(&t);
    CHECK(t == NULL);
    unlink(path);
    CHECK(fe_tickets_new(path, 3600) == NULL);   /* gone: cannot open */
    rmdir(dir);
}

int main(void)
{
    test_good();
    test_refusals();
    test_generate();
    TEST_DONE();
}
