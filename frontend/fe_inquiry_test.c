/* fe_inquiry_test.c — the inquiry topic and filter parsers (fe_inquiry.h): what a device may
 * publish and subscribe to, and every near miss refused (another device, a bad name or rid, a
 * query that is not the rid alone, the answers' own topic). */
#include <string.h>
#include "fe_inquiry.h"
#include "sg_test.h"

static bool topic(const char *t, fe_inquiry_topic_t *out)
{
    sg_mqtt_str_t s = {(const uint8_t *)t, strlen(t)};
    return fe_inquiry_topic("dev-1", 5, s, out);
}

static bool filter(const char *f)
{
    sg_mqtt_str_t s = {(const uint8_t *)f, strlen(f)};
    return fe_inquiry_filter("dev-1", 5, s);
}

int main(void)
{
    fe_inquiry_topic_t t;
    CHECK(topic("devices/dev-1/inquiries/getConfig/?$rid=42", &t));
    CHECK(t.name_len == 9 && memcmp(t.name, "getConfig", 9) == 0 && t.rid_len == 2 && memcmp(t.rid, "42", 2) == 0);
    CHECK(topic("devices/dev-1/inquiries/a.b_c-D/?%24rid=x~y", &t));
    CHECK(t.name_len == 7 && t.rid_len == 3 && memcmp(t.rid, "x~y", 3) == 0);

    const char *refused[] = {
        "devices/dev-2/inquiries/q/?$rid=1",        /* another device */
        "devices/dev-10/inquiries/q/?$rid=1",       /* a longer id with ours as its prefix */
        "devices/dev-/inquiries/q/?$rid=1",
        "devices/dev-1/inquiries/q?$rid=1",         /* no '/' before the query */
        "devices/dev-1/inquiries/q/",               /* no rid */
        "devices/dev-1/inquiries/q/?$rid=",         /* empty rid */
        "devices/dev-1/inquiries/q/?rid=1",
        "devices/dev-1/inquiries/q/?$rid=1&x=2",    /* anything beside the rid */
        "devices/dev-1/inquiries/q/?$rid=a/b",
        "devices/dev-1/inquiries//?$rid=1",         /* empty name */
        "devices/dev-1/inquiries/res/?$rid=1",      /* the answers' level is no name */
        "devices/dev-1/inquiries/res/200/?$rid=1",  /* the answers' topic */
        "devices/dev-1/inquiries/a b/?$rid=1",
        "devices/dev-1/inquiries/q/x/?$rid=1",      /* a level too many */
        "devices/dev-1/inquiries/",
        "devices/dev-1/inquiries",
        "devices/dev-1/messages/events/",
        "devices/dev-1/inquiries/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn/?$rid=1",   /* 65 */
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        CHECK(!topic(refused[i], &t));
    CHECK(topic("devices/dev-1/inquiries/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn/?$rid=1", &t));

    CHECK(filter("devices/dev-1/inquiries/res/#"));
    CHECK(!filter("devices/dev-2/inquiries/res/#") && !filter("devices/dev-1/inquiries/#") &&
          !filter("devices/dev-1/inquiries/res/+") && !filter("devices/dev-1/inquiries/res/#/") &&
          !filter("devices/dev-1/inquiries/res/") && !filter("devices/+/inquiries/res/#") && !filter(""));
    TEST_DONE();
}
