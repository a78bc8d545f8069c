"""URLs built by thumbor's own client library (libthumbor), signed with its code, for
tests/tests/clients.rs: one "LABEL<TAB>PATH" line each, under the /img/ route."""
import os

from libthumbor import CryptoURL

crypto = CryptoURL(key=os.environ["THUMBOR_SECRET"])
urls = {
    "thumbor fill": crypto.generate(width=300, height=200, image_url="a.jpg"),
    "thumbor fit-in webp": crypto.generate(
        width=300, height=200, fit_in=True, filters=["format(webp)", "quality(80)"],
        image_url="a.jpg"),
    "thumbor smart": crypto.generate(width=300, height=200, smart=True, image_url="a.jpg"),
    "thumbor flip": crypto.generate(width=-200, height=0, image_url="a.jpg"),
}
for label, path in urls.items():
    print(f"{label}\t/img{path}")
