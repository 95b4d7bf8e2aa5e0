"""The atlas's reading of a source tree, on two tiny trees shaped like 6.1's and 6.12's
lib/iov_iter.c: specifiers on the line above the name, spelled as attributes or through a
macro; the core kernel's definition before a driver's static of the same name; a function
gone between releases and the successor its old callers use now. No kernel is built.
"""

from __future__ import annotations

from pathlib import Path

from test_probes_fast import fake_build

from kernlab.core.records import BuildRecord
from kernlab.probes.source import find_definition, spec_words
from kernlab.probes.successor import Peer, former_home, home_in_patches, param_types, successor

OLD_IOV = """\
static int copyout(void __user *to, const void *from, size_t n)
{
\treturn n;
}

size_t _copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i)
{
\titerate_and_advance(i, bytes, base, len, off,
\t\tcopyout(base, addr + off, len),
\t\tmemcpy(base, addr + off, len)
\t)
\treturn bytes;
}
"""
NEW_IOV = """\
#define __iter_inline inline __attribute__((__always_inline__))

static __always_inline
size_t copy_to_user_iter(void __user *iter_to, size_t progress,
\t\t\t size_t len, void *from, void *priv2)
{
\treturn len;
}

static __always_inline
size_t memcpy_to_iter(void *iter_to, size_t progress,
\t\t      size_t len, void *from, void *priv2)
{
\treturn 0;
}

static inline __attribute__((always_inline)) int spelled_out(int x)
{
\treturn x;
}

static __iter_inline int through_macro(int x)
{
\treturn x;
}

size_t _copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i)
{
\t/* copyout() used to be called here */
\treturn iterate_and_advance(i, bytes, (void *)addr,
\t\t\t\t   copy_to_user_iter, memcpy_to_iter);
}
"""
PCNET = """\
static void copyout(void __iomem *dest, const void *src, int c)
{
}
"""


def tree(root: Path, iov: str) -> tuple[Path, Path]:
    """A tree with lib/iov_iter.c (compiled) and a driver's static copyout (not compiled)."""
    src, obj = root / "src", root / "obj"
    for folder in (src / "lib", src / "drivers" / "net" / "ethernet" / "8390", obj / "lib"):
        folder.mkdir(parents=True)
    (src / "lib" / "iov_iter.c").write_text(iov)
    (obj / "lib" / "iov_iter.o").write_text("")
    (src / "drivers" / "net" / "ethernet" / "8390" / "pcnet_cs.c").write_text(PCNET)
    (src / "drivers" / "net" / "ethernet" / "8390" / "Makefile").write_text(
        "obj-$(CONFIG_PCMCIA_PCNET) += pcnet_cs.o\n")
    return src, obj


def new_build(where: Path) -> tuple[BuildRecord, Path]:
    """A fake 6.12.118 build (gcc-made ELF, test_probes_fast) whose tree has NEW_IOV compiled."""
    build = fake_build(where, release="6.12.118")
    src, obj = where / "tree", where / "obj"
    (where / "9.9-test-000000000000").mkdir()
    (where / "9.9-test-000000000000" / "obj").symlink_to(obj)
    (src / "lib" / "iov_iter.c").write_text(NEW_IOV)
    (obj / "lib" / "iov_iter.o").write_text("")
    return build, src


def test_specifiers_on_the_line_above_as_attributes_and_through_a_macro_are_read(tmp_path):
    src, obj = tree(tmp_path, NEW_IOV)
    found = find_definition(src, obj, "copy_to_user_iter")
    assert found is not None and found.words == {"static", "__always_inline"}
    assert (found.file, found.line, found.spec_lines) == ("lib/iov_iter.c", 4, 1)
    assert found.text.startswith("static __always_inline size_t copy_to_user_iter(")
    assert found.callers == ["_copy_to_iter"]  # it is passed on, not called: still its user
    assert "__always_inline" in find_definition(src, obj, "spelled_out").words
    assert "__always_inline" in find_definition(src, obj, "through_macro").words
    assert spec_words("static inline __attribute__((noinline, __used__))") == {
        "static", "inline", "noinline", "__used"}


def test_a_drivers_static_of_the_same_name_is_only_found_where_nothing_else_defines_it(tmp_path):
    old_src, old_obj = tree(tmp_path / "old", OLD_IOV)
    found = find_definition(old_src, old_obj, "copyout")
    assert found is not None and found.file == "lib/iov_iter.c" and found.compiled
    new_src, new_obj = tree(tmp_path / "new", NEW_IOV)
    found = find_definition(new_src, new_obj, "copyout")
    assert found is not None and found.file.endswith("pcnet_cs.c") and not found.compiled


def test_a_gone_function_names_where_it_lived_and_its_successor(tmp_path):
    old_src, old_obj = tree(tmp_path / "old", OLD_IOV)
    new_src, _ = tree(tmp_path / "new", NEW_IOV)
    home = former_home("copyout", [Peer("6.1.176", "6.1-0123456789ab", old_src, old_obj)])
    assert home is not None and home.callers == ("_copy_to_iter",)
    assert (home.file, home.line) == ("lib/iov_iter.c", 1)
    assert home.params == ("void __user *", "void *", "size_t")
    assert "6.1.176 defines it in lib/iov_iter.c:1" in home.describe()
    found = successor("copyout", new_src, home)
    assert found is not None and (found.name, found.via) == ("copy_to_user_iter", "_copy_to_iter")
    assert found.line == 4
    assert found.others == ("memcpy_to_iter",)  # no __user pointer: ranked after


def test_without_another_build_the_lab_patches_say_where_it_lived(tmp_path):
    patch = tmp_path / "0001.patch"
    patch.write_text("kernlab: copyout\n\nKernel:  6.1 (written for 6.1.192)\n\n--- a/lib/iov_iter.c\n"
                     "+++ b/lib/iov_iter.c\n@@ -161,3 +161,3 @@\n \n"
                     "-static int copyout(void __user *to, const void *from, size_t n)\n"
                     "+noinline int copyout(void __user *to, const void *from, size_t n)\n {\n")
    home = home_in_patches("copyout", [patch])
    assert home is not None and (home.release, home.file, home.line) == ("6.1", "lib/iov_iter.c", 162)
    assert home_in_patches("copy_to_user_iter", [patch]) is None
    assert param_types("int f(struct file *file, const char __user *buf)", "f") == (
        "file *", "char __user *")


def test_the_atlas_says_a_gone_function_is_gone_and_names_its_successor(tmp_path, monkeypatch):
    """6.12's copyout as the atlas sees it: gone, with copy_to_user_iter via _copy_to_iter,
    not the driver's static copyout and its CONFIG_ option; copy_to_user_iter itself is
    __always_inline (read on the line above its name), so the fix is its caller."""
    from kernlab.probes.atlas import Kernel, row_for
    from kernlab.probes.target import parse_target

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    build, src = new_build(tmp_path / "new")
    driver = src / "drivers" / "net" / "ethernet" / "8390"
    driver.mkdir(parents=True)
    (driver / "pcnet_cs.c").write_text(PCNET)
    (driver / "Makefile").write_text("obj-$(CONFIG_PCMCIA_PCNET) += pcnet_cs.o\n")
    kernel = Kernel(build)
    old_src, old_obj = tree(tmp_path / "old", OLD_IOV)
    kernel.peers = [Peer("6.1.176", "6.1-0123456789ab", old_src, old_obj)]
    row = row_for(parse_target("copyout"), kernel)
    assert row.verdict == "no" and row.successor == "copy_to_user_iter"
    assert "copyout is gone from Linux 6.12.118: lib/iov_iter.c no longer defines it" in row.reason
    assert "copy_to_user_iter (lib/iov_iter.c:4, static __always_inline), which _copy_to_iter" in row.reason
    assert "static copyout in drivers/net/ethernet/8390/pcnet_cs.c is another function" in row.reason
    assert "CONFIG_PCMCIA_PCNET" not in row.fix and row.fix.startswith("probe _copy_to_iter, which inlines")
    row = row_for(parse_target("copy_to_user_iter"), kernel)
    assert "static __always_inline copy_to_user_iter (lib/iov_iter.c:4) was inlined" in row.reason
    assert row.fix == "probe a caller (_copy_to_iter): copy_to_user_iter is __always_inline"
    kernel.peers = []  # no other build: the lab's own patches still say where copyout lived
    row = row_for(parse_target("copyout"), kernel)
    assert "no longer defines it (4.15 defines it in lib/iov_iter.c:" in row.reason
    assert "CONFIG_PCMCIA_PCNET" not in row.fix and not row.successor
    monkeypatch.setenv("KERNLAB_ROOT", str(tmp_path / "empty"))  # nothing knows it: the driver's it is
    assert "CONFIG_PCMCIA_PCNET" in row_for(parse_target("copyout"), Kernel(build)).fix


def test_make_probeable_refuses_always_inline_on_the_line_above_and_a_gone_function(tmp_path, monkeypatch):
    from kernlab.probes.atlas import Kernel
    from kernlab.probes.probeable import refusal, rewrite

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    build, _ = new_build(tmp_path / "new")
    kernel = Kernel(build)
    old_src, old_obj = tree(tmp_path / "old", OLD_IOV)
    kernel.peers = [Peer("6.1.176", "6.1-0123456789ab", old_src, old_obj)]
    found = kernel.definition("copy_to_user_iter")
    assert refusal(kernel, "copy_to_user_iter", found).startswith(
        "copy_to_user_iter is __always_inline (lib/iov_iter.c:4)")
    why = refusal(kernel, "copyout", kernel.definition("copyout"))
    assert why.startswith("copyout is gone from Linux 6.12.118: lib/iov_iter.c no longer defines it")
    assert "its successor is copy_to_user_iter, which _copy_to_iter uses in its place" in why
    text = "x\nstatic inline\nloff_t *file_ppos(struct file *file)\n{\n"
    made = rewrite(text, "file_ppos", type(found)("f.c", 3, "", {"static", "inline"}, spec_lines=1))
    assert made.split("\n")[0] == "x" and "noinline loff_t *file_ppos(struct file *file)" in made
    assert "static" not in made and "\ninline" not in made and "\nloff_t" not in made


def test_a_function_a_later_release_added_is_not_there_yet_and_the_older_one_is_named(tmp_path, monkeypatch):
    from kernlab.probes.atlas import Kernel, row_for
    from kernlab.probes.target import parse_target

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    build = fake_build(tmp_path / "old", release="6.1.176")
    (tmp_path / "old" / "9.9-test-000000000000").mkdir()
    (tmp_path / "old" / "9.9-test-000000000000" / "obj").symlink_to(tmp_path / "old" / "obj")
    (tmp_path / "old" / "tree" / "lib" / "iov_iter.c").write_text(OLD_IOV)
    (tmp_path / "old" / "obj" / "lib" / "iov_iter.o").write_text("")
    kernel = Kernel(build)
    new_src, new_obj = tree(tmp_path / "new", NEW_IOV)
    kernel.peers = [Peer("6.12.118", "6.12-0123456789ab", new_src, new_obj)]
    row = row_for(parse_target("copy_to_user_iter"), kernel)
    assert row.reason.startswith("copy_to_user_iter is not in Linux 6.1.176 yet: a later release added it")
    assert "here copyout (lib/iov_iter.c:1, static) is what _copy_to_iter uses in its place" in row.reason
