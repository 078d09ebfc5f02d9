/*
 * asan_preload.c: preloaded after gcc's libasan into the postmaster of the ASan run
 * (test/sanitize/run.sh).
 *
 * An uninstrumented program with libasan preloaded initialises ASan at its first malloc.
 * In postgres that first malloc comes from libgpg-error's constructor, inside glibc's
 * bindtextdomain() with gettext's lock held; ASan's initialisation calls dlerror(),
 * which takes the same lock, and the lock is left corrupted: the next bindtextdomain()
 * (in postgres's main) hangs for ever.  This wrapper of bindtextdomain() makes a first
 * allocation before taking the lock, so ASan initialises outside it, then calls glibc's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

char	   *bindtextdomain(const char *domainname, const char *dirname);

char *
bindtextdomain(const char *domainname, const char *dirname)
{
	static char *(*real) (const char *, const char *);

	if (real == NULL)
	{
		void	   *volatile p = malloc(1);

		free(p);
		real = (char *(*) (const char *, const char *)) dlsym(RTLD_NEXT, "bindtextdomain");
	}
	return real(domainname, dirname);
}
